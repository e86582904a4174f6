"""`electra-np plot`: a run's curves as one PNG (the drawing: train/plot.py).

    electra-np plot runs/electra-tiny                  # -> runs/electra-tiny/curves.png
    electra-np plot runs/sst2 --out sst2.png           # a fine-tuned classifier: its per-epoch metrics
"""

from ..train.plot import DEFAULT_NAME, PLOT_EXTRA, PlotError, plot_run


def cmd_plot(args) -> int:
    path = plot_run(args.run, args.out)
    if path is None:
        raise PlotError(f"matplotlib is not installed; install the plot extra: {PLOT_EXTRA}")
    print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    """Register `plot` on an argparse subparsers object."""
    p = sub.add_parser("plot", help="draw a run's curves (or a fine-tuned classifier's epochs) as a PNG",
                       description="Draw a pretraining run's curves (total, MLM and discriminator loss, MLM accuracy, "
                                   "discriminator accuracy against its always-'original' baseline, replaced share, "
                                   "learning rate, tokens/s, and the held-out diagnostics it logged) or a fine-tuned "
                                   "classifier's per-epoch training loss and dev metrics, as one PNG. Needs the plot "
                                   f"extra: {PLOT_EXTRA}.")
    p.add_argument("run", metavar="RUN", help="a pretraining run folder (metrics.jsonl) or a fine-tuned classifier "
                                              "folder (finetune.json)")
    p.add_argument("--out", metavar="FILE.png", default=None, help=f"the PNG to write (default: RUN/{DEFAULT_NAME})")
    p.set_defaults(func=cmd_plot)
