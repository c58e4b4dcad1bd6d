"""Where the dashboard's "to DataFrame" and "save Parquet" put things, and how they say so."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd


def default_file(name: str) -> str:
    """`ibstream-<name>-<UTC time>.parquet`, in the working directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"ibstream-{name}-{stamp}.parquet".replace(" ", "_").replace("/", "_")


def write_parquet(ticks: pd.DataFrame, bars: pd.DataFrame, path: str | Path) -> tuple[Path, Path]:
    """Ticks to `path` (`.parquet` added when it has no suffix), bars beside it as
    `<stem>.bars.parquet`; the absolute paths written."""
    path = Path(path).expanduser()
    if not path.name:
        raise ValueError("give a file name to save to")
    if not path.suffix:
        path = path.with_suffix(".parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    bars_path = path.with_name(f"{path.stem}.bars.parquet")
    ticks.to_parquet(path)
    bars.to_parquet(bars_path)
    return path.resolve(), bars_path.resolve()


def frames_message(obj: object, ticks: int, trades: int, bars: int) -> str:
    name = kernel_name(obj)
    return (
        f"{ticks} ticks, {trades} trades and {bars} bars of the window now; "
        f"{name}.ticks, {name}.trades and {name}.bars are always current"
    )


def saved_message(ticks_path: Path, bars_path: Path, ticks: int, bars: int) -> str:
    return f"saved {ticks} ticks to {ticks_path} and {bars} bars to {bars_path}"


def kernel_name(obj: object) -> str:
    """The user's variable for `obj` in the IPython namespace, else 'dashboard'."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        names = [k for k, v in shell.user_ns.items() if v is obj and not k.startswith("_")]
    except Exception:  # no IPython, or no shell: a plain script
        names = []
    return names[0] if names else "dashboard"
