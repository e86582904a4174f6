"""electra_np: ELECTRA pretraining in NumPy, every backward pass written by hand.

Importing it changes no process-wide setting; the fast path's are electra_np.fast.runtime.configure()'s.
"""

__version__ = "0.1.0"
