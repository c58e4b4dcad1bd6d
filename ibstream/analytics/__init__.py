"""Order-flow analytics on tick frames: pandas in, pandas out, no I/O.

Every public name of the submodules is imported here. Four of them are functions named as
their module (`classify`, `bars`, `footprint`, `absorption`); they are bound last, so that
the package attribute is always the function, even after `import ibstream.analytics.bars`
(which binds the module there only when it first loads it, and the imports below load it
first).
"""

from __future__ import annotations

from ibstream.analytics.arrival import DoubleCountWarning
from ibstream.analytics.classifier import TradeClassifier
from ibstream.analytics.delta import (
    ROLLING_COLUMNS,
    SUMMARY_COLUMNS,
    DeltaSummary,
    cumulative_delta,
    rolling,
    signed_volume,
    summary,
)
from ibstream.analytics.engine import DeltaEngine
from ibstream.analytics.imbalance import IMBALANCE_COLUMNS
from ibstream.analytics.live import Trade, trades_frame
from ibstream.analytics.live_levels import LiveFootprint, LiveProfile
from ibstream.analytics.lookahead import LOOKAHEAD_TIMEOUT
from ibstream.analytics.ofi import OFI_BAR_COLUMNS, OFI_COLUMNS, order_flow_imbalance
from ibstream.analytics.profile import (
    PROFILE_LEVEL_COLUMNS,
    PROFILE_PERIOD_COLUMNS,
    VolumeProfile,
    value_area,
    volume_profile,
)
from ibstream.analytics.running import Now

# isort: split
# issue 14, toxicity and microstructure (T)
from ibstream.analytics.absorption import ABSORPTION_COLUMNS, AbsorptionEngine
from ibstream.analytics.divergence import DIVERGENCE_COLUMNS, DivergenceEngine, delta_divergence
from ibstream.analytics.microprice import (
    MICROPRICE_COLUMNS,
    MICROPRICE_METHODS,
    QUOTE_IMBALANCE_COLUMNS,
    microprice,
    quote_imbalance,
)
from ibstream.analytics.stoikov import STOIKOV_COLUMNS, stoikov_table
from ibstream.analytics.vpin import VPIN_COLUMNS, VPIN_METHODS, VpinEngine, vpin

# isort: split
# last: the functions named as their module (see the module doc)
from ibstream.analytics.bars import BAR_COLUMNS, bars, bulk_volume, normal_cdf
from ibstream.analytics.classify import (
    DEFAULT_METHOD,
    METHODS,
    OPT_IN_METHODS,
    QUOTE_DTYPE,
    QUOTE_STATES,
    SIDE_DTYPE,
    SIDES,
    TRADE_COLUMNS,
    classify,
    classify_with_state,
    empty_trades,
    resolve_method,
)
from ibstream.analytics.footprint import FOOTPRINT_COLUMNS, footprint, price_levels

# isort: split
from ibstream.analytics.absorption import absorption  # issue 14 (T), named as its module

__all__ = [
    # volume profile and footprint imbalances
    "IMBALANCE_COLUMNS",
    "PROFILE_LEVEL_COLUMNS",
    "PROFILE_PERIOD_COLUMNS",
    "LiveFootprint",
    "LiveProfile",
    "VolumeProfile",
    "value_area",
    "volume_profile",
    # lookahead classification (issue 14)
    "LOOKAHEAD_TIMEOUT",
    "OPT_IN_METHODS",
    # the delta analytics
    "BAR_COLUMNS",
    "DEFAULT_METHOD",
    "FOOTPRINT_COLUMNS",
    "METHODS",
    "OFI_BAR_COLUMNS",
    "OFI_COLUMNS",
    "QUOTE_DTYPE",
    "QUOTE_STATES",
    "ROLLING_COLUMNS",
    "SIDES",
    "SIDE_DTYPE",
    "SUMMARY_COLUMNS",
    "TRADE_COLUMNS",
    # issue 14, toxicity and microstructure (T)
    "ABSORPTION_COLUMNS",
    "DIVERGENCE_COLUMNS",
    "MICROPRICE_COLUMNS",
    "MICROPRICE_METHODS",
    "QUOTE_IMBALANCE_COLUMNS",
    "STOIKOV_COLUMNS",
    "VPIN_COLUMNS",
    "VPIN_METHODS",
    "AbsorptionEngine",
    "DivergenceEngine",
    "VpinEngine",
    "absorption",
    "delta_divergence",
    "microprice",
    "quote_imbalance",
    "stoikov_table",
    "vpin",
    # end of issue 14 (T)
    "DeltaEngine",
    "DeltaSummary",
    "DoubleCountWarning",
    "Now",
    "Trade",
    "TradeClassifier",
    "bars",
    "bulk_volume",
    "classify",
    "classify_with_state",
    "cumulative_delta",
    "empty_trades",
    "footprint",
    "normal_cdf",
    "order_flow_imbalance",
    "price_levels",
    "resolve_method",
    "rolling",
    "signed_volume",
    "summary",
    "trades_frame",
]
