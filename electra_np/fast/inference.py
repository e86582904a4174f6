from .step import make_fast_discriminator as FastDiscriminator  # noqa: F401  TEMPORARY shim (refactor in progress)
