"""A TWS API gateway simulator: unmodified ib_insync / ib_async clients connect to it,
resolve the built-in contracts and receive tick-by-tick data from a seeded market."""

from ibstream.gateway.contracts import BUILTIN_CONTRACTS, SESSION_DATE, SimContract
from ibstream.gateway.market import Market
from ibstream.gateway.server import GatewaySimulator, run_gateway

__all__ = [
    "BUILTIN_CONTRACTS",
    "SESSION_DATE",
    "GatewaySimulator",
    "Market",
    "SimContract",
    "run_gateway",
]
