"""Length-bucketed batches: examples of similar length batched together, so that a padded batch holds
little padding and an unpadded one (unpadded.py) has sequences of similar cost. Deterministic: the
batches are a pure function of (lengths, batch_size, width, seed, epoch).

Training, epoch e (train_batches), exactly:
    rng = np.random.default_rng([seed, e])
    1. bucket k holds the examples with k * width < length <= (k + 1) * width, in index order;
    2. for k = 0, 1, ... (ascending, empty buckets skipped): the bucket's members in the order
       rng.permutation(members), cut into consecutive batches of batch_size (a bucket's last batch may be
       shorter; none is dropped);
    3. the list of every bucket's batches, in the order rng.permutation(number of batches).
So each example is seen exactly once per epoch; which examples share a batch changes with the epoch
(within a bucket), and so does the order of the batches (across buckets). A batch never mixes buckets.

Evaluation and prediction (eval_batches): the examples sorted by length (stable: ties in index order),
cut into consecutive batches of batch_size; in_input_order puts the per-batch results back in the order
of the input.
"""

from collections.abc import Sequence

import numpy as np


def _check(lengths, batch_size: int, width: int = 1) -> np.ndarray:
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.size == 0 or not np.issubdtype(lengths.dtype, np.integer) or lengths.min() < 1:
        raise ValueError("lengths must be a non-empty 1-d array of integers >= 1")
    for name, v in (("batch_size", batch_size), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return lengths.astype(np.int64)


def bucket_of(lengths, width: int) -> np.ndarray:
    """Bucket k of each length: k * width < length <= (k + 1) * width.  Inputs: lengths (n,).  Returns: (n,)."""
    return (_check(lengths, 1, width) - 1) // width


def train_batches(lengths, batch_size: int, seed: int, epoch: int = 0, width: int = 16) -> list[np.ndarray]:
    """The batches of one training epoch, as the module docstring says: shuffled within buckets of `width`
    lengths, then the batches shuffled across buckets.

    Inputs:  lengths (n,) real tokens per example; batch_size; seed, epoch; width
    Returns: list of index arrays, together a permutation of range(n)
    """
    lengths = _check(lengths, batch_size, width)
    rng = np.random.default_rng([seed, epoch])
    buckets = bucket_of(lengths, width)
    batches = []
    for k in np.unique(buckets):  # ascending
        members = rng.permutation(np.flatnonzero(buckets == k))
        batches += [members[s:s + batch_size] for s in range(0, len(members), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Batches of examples of similar length for evaluation or prediction: sorted by length (stable), cut into
    consecutive batches of batch_size. Returns: list of index arrays, together a permutation of range(n)."""
    lengths = _check(lengths, batch_size)
    order = np.argsort(lengths, kind="stable")
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def in_input_order(batches: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The results of `batches` (outputs[i] has one row per index of batches[i]) as one array in input order.

    Inputs:  batches: index arrays, together a permutation of range(n); outputs: arrays (len(batches[i]), ...)
    Returns: (n, ...), row j the result of example j
    """
    if len(batches) != len(outputs) or any(len(b) != len(o) for b, o in zip(batches, outputs)):
        raise ValueError("outputs must hold one result per index of each batch")
    index, out = np.concatenate(batches), np.concatenate(outputs)
    if not np.array_equal(np.sort(index), np.arange(len(index))):
        raise ValueError("batches must together hold each of 0..n-1 exactly once")
    result = np.empty_like(out)
    result[index] = out
    return result
