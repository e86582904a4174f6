"""electra_np: ELECTRA pretraining in NumPy, every backward pass written by hand."""

from .fast import runtime as threads

threads.quiet_blas_spin()  # before anything here imports NumPy (threads.py says why)

__version__ = "0.1.0"
