from pathlib import Path

from electra_np.fast import runtime

runtime.configure()  # before NumPy loads OpenBLAS: the short idle spin, workqueue layer (fast/runtime.py)

import pytest  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    if not DATA.is_dir():
        pytest.skip(f"shared data folder {DATA} is absent (the real corpora live in ../shared/data)")
    return DATA
