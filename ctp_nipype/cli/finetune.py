"""``ctp-finetune``: adapt the perfusion Transformer to unlabelled scans (residue head only).

Example
-------
ctp-finetune --scan sub-01_ctp.nii.gz --aif sub-01_desc-global_aif.tsv --mask sub-01_desc-brain_mask.nii.gz \
    --out tuned/

The AIF file is the one the BIDS App or ``ctp-perfusion`` wrote for the scan (its partial-volume corrected
column is read), and the tuned weights are used with ``--weights tuned/finetuned.safetensors``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._errors import user_facing


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ctp-finetune",
        description="Fine-tune the perfusion Transformer on your own CTP scans without labels: every weight "
        "frozen except the residue head, loss = tissue reconstruction + residue smoothness. "
        "Writes OUT/finetuned.safetensors (+ .json) and OUT/model_card.md.",
    )
    parser.add_argument("--scan", action="append", required=True, help="4D CTP NIfTI in HU (repeat for several)")
    parser.add_argument("--aif", action="append", required=True,
                        help="global AIF TSV, one per --scan: the pipeline's <prefix>_desc-global_aif.tsv or your own")
    parser.add_argument("--aif-column", default=None, metavar="NAME",
                        help="the AIF's column (default: 'aif_corrected', the partial-volume corrected AIF that "
                             "the maps are computed with, when the file has it, else 'aif')")
    parser.add_argument("--mask", action="append", default=None, help="brain mask NIfTI, one per --scan")
    parser.add_argument("--out", required=True, help="output folder (not inside an input dataset)")
    parser.add_argument("--weights", default=None, help="starting weights (default: the shipped weights)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-voxels", type=int, default=200000, help="voxels kept per scan (random subset)")
    parser.add_argument("--frame-interval", type=float, default=None, help="s, when the scan has no timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--allow-long-frames", action="store_true",
                        help="accept frame intervals above 10 s and scans above 10 minutes")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def validate(args, parser):
    """Every option and path checked before any work (the fine-tuning takes minutes)."""
    from ..bids import check_output_outside_input, find_dataset_root
    from ..io import prepare_output_dir
    from .parser import check_options, check_weights

    if len(args.aif) != len(args.scan) or (args.mask and len(args.mask) != len(args.scan)):
        parser.error("give one --aif (and one --mask, if any) per --scan, in the same order")
    check_options(args)
    for label, paths in (("scan", args.scan), ("AIF file", args.aif), ("mask", args.mask or [])):
        for path in paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"The {label} {path} does not exist (--{label.split()[0].lower()}).")
    datasets = {root for root in (find_dataset_root(p) for p in [*args.scan, *args.aif, *(args.mask or [])]) if root}
    if datasets:
        check_output_outside_input(args.out, sorted(datasets))
    if args.weights is not None:
        check_weights(Path(args.weights))
    return prepare_output_dir(args.out, "output folder (--out)")


@user_facing("ctp-finetune")
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    out = validate(args, parser)
    import torch

    from ..nn.finetune import DEFAULT_AIF_COLUMNS, card_markdown, finetune, finetuned_card, load_scan_curves
    from ..nn.weights import load_model, save_weights
    from ._workdir import locked_folders

    if args.threads:
        torch.set_num_threads(args.threads)
    with locked_folders("ctp-finetune", [(out, "output folder (--out)")]):
        model = load_model(args.weights)
        scans = [
            load_scan_curves(scan, aif, args.mask[i] if args.mask else None, args.frame_interval, args.max_voxels,
                             args.seed, aif_column=args.aif_column or DEFAULT_AIF_COLUMNS,
                             allow_long_frames=args.allow_long_frames)
            for i, (scan, aif) in enumerate(zip(args.scan, args.aif))
        ]
        settings = {"batch_size": args.batch_size, "learning_rate": args.learning_rate, "seed": args.seed,
                    "base_weights": args.weights or "shipped"}
        result = finetune(model, scans, args.steps, args.batch_size, args.learning_rate, args.seed, progress=True)
        card = finetuned_card(getattr(model, "card", {}), result, scans, settings)
        path = save_weights(model, out / "finetuned.safetensors", card)
        (out / "model_card.md").write_text(card_markdown(card), encoding="utf-8")
    print(f"ctp-finetune: loss {result['loss_before']:.4g} -> {result['loss_after']:.4g}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
