"""ibstream: live Interactive Brokers tick-by-tick data over SSE and WebSocket, with
order-flow analytics for pandas and Jupyter."""

from ibstream.classify import (
    DeltaSummary,
    QuoteRuleClassifier,
    Side,
    classify_frame,
    classify_trade,
    summarize,
)
from ibstream.errors import ErrorCode, StreamError
from ibstream.model import ContractInfo, Tick, TickType

__version__ = "0.1.0"
__all__ = [
    "ContractInfo",
    "DeltaSummary",
    "ErrorCode",
    "QuoteRuleClassifier",
    "Side",
    "StreamError",
    "Tick",
    "TickType",
    "classify_frame",
    "classify_trade",
    "summarize",
]
