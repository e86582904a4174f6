"""The fast path: the reference model's pretraining step, classifier and inference, with the elementwise work in
Numba kernels, the matrix products in BLAS, and every buffer allocated once per batch shape. engine.py chooses
between it and the reference; both return the same numbers to floating-point tolerance.

    runtime.py     configure(): every process-wide setting (thread counts, BLAS idle spin, Numba layer, vectors)
    encoder.py     Encoder: model.encoder_forward / encoder_backward on preallocated buffers (and Arena, key_bias)
    heads.py       GeneratorHead (with the MLM loss) and DiscriminatorHead: ops/heads.py + ops/losses.py
    step.py        FastStep: model.electra_forward + electra_backward, line for line
    classify.py    FastClassifier: classification.py's fine-tuning step and logits
    unpadded.py    FastUnpaddedClassifier: the same over the real tokens only (unpadded.py); the default
    inference.py   FastDiscriminator: the discriminator's per-token logits
    kernels/       the Numba kernels, each with its NumPy twin (kernels/__init__.py has the map)
"""
