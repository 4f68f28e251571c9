"""``ctp-train``: train the perfusion Transformer on simulated curves.

Examples
--------
ctp-train --recipe cpu --out /work/train_runs/cpu            # start
ctp-train --recipe cpu --out /work/train_runs/cpu --resume   # continue after an interruption
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._errors import user_facing


def build_parser():
    from ..nn.training import available_recipes

    parser = argparse.ArgumentParser(
        prog="ctp-train",
        description="Train the perfusion Transformer (Zeng et al. 2025) on simulated curves. "
        "Writes checkpoint.safetensors, log.tsv, best.safetensors and last.safetensors into --out; a recipe in stages "
        "(cpu) trains each stage in OUT/stage1, OUT/stage2 ... from the previous stage's best weights and "
        "writes the last stage's best.safetensors and last.safetensors into --out.",
    )
    parser.add_argument("--recipe", default="cpu", help=f"recipe name ({', '.join(available_recipes())}) or JSON file")
    parser.add_argument("--out", required=True, help="run directory (outside any input dataset)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.safetensors (in stages: from the unfinished stage's); "
                             "checkpoints are never pickles")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto (CUDA + mixed precision if present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many steps (smoke tests; all stages together)")
    parser.add_argument("--time-budget-minutes", type=float, default=None,
                        help="replace the recipe's time budget (also with --resume; shared out between stages "
                             "in proportion to their own budgets)")
    parser.add_argument("--init-weights", default=None, metavar="WEIGHTS",
                        help="start from these weights (a .safetensors file, or 'shipped'); replaces the recipe's "
                             "init_weights (a second training phase)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


@user_facing("ctp-train")
def main(argv=None):
    args = build_parser().parse_args(argv)
    from ..io import prepare_output_dir
    from ..nn.training import load_recipe, train
    from ._workdir import locked_folders
    from .parser import check_device, check_options

    check_options(args)
    check_device(args.device)
    recipe = load_recipe(args.recipe)
    if args.init_weights is not None:
        if args.resume:
            raise ValueError("--init-weights starts a new run; it cannot be combined with --resume.")
        if args.init_weights != "shipped":
            from .parser import check_weights

            check_weights(Path(args.init_weights))
        recipe["init_weights"] = args.init_weights if args.init_weights == "shipped" else str(
            Path(args.init_weights).resolve())
    out = prepare_output_dir(args.out, "run folder (--out)")
    with locked_folders("ctp-train", [(out, "run folder (--out)")]):
        metrics = train(
            recipe,
            out,
            resume=args.resume,
            device=args.device,
            threads=args.threads,
            progress=not args.no_progress,
            max_steps=args.max_steps,
            time_budget_minutes=args.time_budget_minutes,
        )
    print("ctp-train: finished at step {step} after {elapsed_s:.0f} s".format(**metrics))
    for key in ("val_cbf_rmse", "val_bad_rmse", "val_cbf_ratio", "val_local_aif_r"):
        if key in metrics:
            print(f"  {key} = {metrics[key]:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
