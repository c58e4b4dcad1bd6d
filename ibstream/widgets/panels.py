"""The dashboard's panels by name (`dashboard(panels=...)`) and the check of the argument."""

from __future__ import annotations

PANELS = ("price", "volume", "delta", "buy_pct", "profile", "footprint")
DEFAULT_PANELS = ("price", "volume", "delta", "buy_pct")
LEVEL_PANELS = frozenset({"profile", "footprint"})  # those that need volume per price level


def check_panels(panels: object) -> tuple[str, ...]:
    """The panels asked for, in the dashboard's order (`PANELS`); one name alone is one
    panel. A ValueError / TypeError naming `panels` and the valid names otherwise."""
    if isinstance(panels, str):
        panels = (panels,)
    try:
        names = list(panels)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"panels must be a tuple of panel names ({', '.join(PANELS)}), got {panels!r}"
        ) from None
    unknown = [n for n in names if n not in PANELS]
    if unknown:
        raise ValueError(
            f"panels: unknown panel {unknown[0]!r}; the panels are {', '.join(PANELS)}"
        )
    if not names:
        raise ValueError(f"panels must name at least one of {', '.join(PANELS)}")
    return tuple(name for name in PANELS if name in names)
