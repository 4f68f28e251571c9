"""The learning curve of a ``ctp-train`` run: validation metrics against curves seen, as markdown and PNG.

    python benchmarks/studies/learning_curve.py RUN_DIR [--png docs/learning_curve.png]

Reads ``RUN_DIR/log.tsv`` (written by :func:`ctp_nipype.nn.training.train`) and prints one row per validation
(step, minutes, curves seen, validation CBF RMSE, BAD RMSE, CBF ratio, local-AIF r). The validation set is
the run's fixed-seed set drawn from the training ranges (CBF 0-200 ml/100 g/min), so its RMSEs are larger than
on the paper's test sets (CBV 4%, CBF 10-70). A run of a recipe in stages (``RUN_DIR/stage1/log.tsv``,
``RUN_DIR/stage2/log.tsv`` ...) is read stage after stage, with steps, minutes and curves counted from the
start of the first stage and a ``stage`` column; each stage validates on a set drawn from its own ranges.
A run whose recipe sets ``ema_decay`` also gets the moving average's validation CBF and BAD RMSE (two ``EMA``
columns, and dashed lines in the PNG).

It also prints the weighted loss terms of eq. 2 relative to the BAD term (BAD : local AIF : tissue :
smoothness, the paper aims at 1:1:7:1), averaged over the logged steps of early and late windows of the run.
"""

from __future__ import annotations

import argparse

from ctp_nipype.nn.logs import markdown, plot, ratio_lines, read_loss_rows, read_validation_rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--png", help="also write the curve as a PNG")
    args = parser.parse_args(argv)
    try:
        rows = read_validation_rows(args.run_dir)
    except FileNotFoundError as err:
        parser.error(str(err))
    if not rows:
        parser.error(f"{args.run_dir} has no validation rows yet")
    print(markdown(rows))
    loss_rows = read_loss_rows(args.run_dir)
    for stage in sorted({r.get("stage", 0) for r in loss_rows}):
        if stage:
            print(f"\nstage {stage:.0f}, steps counted within the stage:", end="")
        part = [r for r in loss_rows if r.get("stage", 0) == stage]
        first_step = part[0]["step"] - 1
        print(ratio_lines([{**r, "step": r["step"] - first_step} for r in part]))
    if args.png:
        plot(rows, args.png)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
