import os
from pathlib import Path

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # torch's OpenMP and numba share some test processes

import electra_np  # noqa: E402,F401  (before NumPy loads OpenBLAS: the short idle spin, electra_np/threads.py)

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    if not DATA.is_dir():
        pytest.skip(f"shared data folder {DATA} is absent (the real corpora live in ../shared/data)")
    return DATA
