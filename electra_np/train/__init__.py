"""Training: pretraining runs and fine-tuning. One line per module, in the order a run uses them:

    config.py      TrainConfig (the run's settings), RunError, TrainingDiverged
    run_dir.py     the run folder: its file names, the checks before a run starts
    state.py       what a checkpoint holds (parameters, AdamW, random streams, data position): exact resume
    checkpoint.py  the checkpoint file: one .npz, written atomically, read with every check
    loop.py        train(): load, step, clip, update, log, evaluate, snapshot, save
    budget.py      the steps that fit a wall-clock budget, from a step time measured on throwaway copies
    held_out.py    held-out metrics and the demo sentence
    diagnostics.py is it paying off: replaced-token detection, unigram entropy, collapse check, warnings
    report.py      console lines, log.txt, metrics.jsonl, the closing summary
    export.py      the discriminator and generator folders left for fine-tuning
    snapshots.py   the same folders at fractions of the schedule
    finetune.py    the official fine-tuning recipe: a classifier on a pretrained discriminator
    metrics.py     GLUE's metrics and the median over seeds

Imports run downward only: training uses the model, the data wing and, through engine.py, the fast path;
never cli/. Importing this package imports nothing (cli.main reads TrainingDiverged before NumPy loads).
"""
