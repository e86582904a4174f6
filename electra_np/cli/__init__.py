"""The `electra-np` command: a thin layer that parses, calls one library function, prints, and returns an
exit code.

    main.py      the entry point: --threads to fast.runtime.configure first, then the subcommands, exit codes
    common.py    the exit codes, CliError, the corpus options
    pretrain.py  `pretrain`: options, settings resolution, the steps to train.loop.train
    tools.py     `build-vocab`, `prepare`, `gradcheck`
    finetune.py  `finetune`, `evaluate`, `predict`
"""
