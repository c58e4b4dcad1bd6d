"""Access to the recorded market data in ../shared/data (true aggressor side per trade)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_csv(dataset: str, name: str) -> pd.DataFrame:
    path = SHARED_DATA / dataset / name
    if not path.exists():
        pytest.skip(f"recorded data not found at ../shared/data/{dataset}/{name}")
    return pd.read_csv(path)
