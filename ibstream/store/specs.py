"""What a read asks for, checked: contract specs (symbol, local symbol, conId, or a list)
against what the recording holds, tick type names, and a time range; each refusal is a
`StoreError` whose message says what to give instead."""

from __future__ import annotations

import pandas as pd

from ibstream.errors import StreamError
from ibstream.model import TickType
from ibstream.store.errors import StoreError


def tick_types(value: object) -> list[str] | None:
    if value is None:
        return None
    try:
        return [t.value for t in TickType.parse_list([value] if isinstance(value, str) else value)]
    except StreamError as exc:
        raise StoreError("INVALID_TICK_TYPE", exc.message) from None
    except TypeError:
        raise StoreError(
            "INVALID_TICK_TYPE", f"tick_types must be a name or a list of names, got {value!r}"
        ) from None


def time_range(start: object, end: object) -> tuple[int | None, int | None]:
    """`start` and `end` as UTC nanoseconds (None stays None); start after end is refused."""
    lo, hi = _ns("start", start), _ns("end", end)
    if lo is not None and hi is not None and lo > hi:
        raise StoreError(
            "INVALID_RANGE",
            f"start {pd.Timestamp(lo, tz='UTC')} is after end "
            f"{pd.Timestamp(hi, tz='UTC')}; swap them",
        )
    return lo, hi


def _ns(name: str, value: object) -> int | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            "INVALID_TIME",
            f"{name} must be a time such as '2026-12-07 14:30'; got {value!r} ({exc})",
        ) from None
    if stamp is pd.NaT:
        raise StoreError("INVALID_TIME", f"{name} must be a time, got {value!r}")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value)


def resolve(contract: object, infos: dict[int, dict], where: str) -> list[int] | None:
    """The conIds a contract spec names (symbol, local symbol, conId, or a list of them);
    None for all. A spec the recording does not hold is CONTRACT_NOT_FOUND."""
    if contract is None:
        return None
    specs = contract if isinstance(contract, list | tuple | set) else [contract]
    found: list[int] = []
    for spec in specs:
        ids = _matches(spec, infos)
        if not ids:
            held = ", ".join(_label(i) for i in infos.values()) or "nothing yet"
            raise StoreError(
                "CONTRACT_NOT_FOUND",
                f"contract {spec!r} is not in the recording {where}; it holds {held}",
                contract=spec,
            )
        found += [i for i in ids if i not in found]
    return found


def _matches(spec: object, infos: dict[int, dict]) -> list[int]:
    if isinstance(spec, bool) or not isinstance(spec, int | str):
        raise StoreError(
            "INVALID_CONTRACT",
            f"contract must be a symbol, local symbol or conId (or a list); got {spec!r}",
        )
    text = str(spec).strip()
    if text.isdigit() and int(text) in infos:
        return [int(text)]
    key = text.upper()
    return [
        i
        for i, info in infos.items()
        if key in (str(info.get("symbol", "")).upper(), str(info.get("local_symbol", "")).upper())
    ]


def _label(info: dict) -> str:
    local = info.get("local_symbol")
    name = info.get("symbol", "?") + (
        f" ({local})" if local and local != info.get("symbol") else ""
    )
    return f"{name} {info['contract_id']}"
