"""TWS's error texts, and the error a request gets when the simulator refuses it.

A request the simulator does not implement is answered with an error carrying its request
id (never silence), so a client's pending call ends at once instead of timing out.
"""

from __future__ import annotations

ERROR_MESSAGES = {
    162: "Historical Market Data Service error message:HMDS query returned no data",
    200: "No security definition has been found for the request",
    201: "Order rejected - reason:",
    321: "Error validating request.-'bW' : cause - ",
    322: "Error processing request.-'bW' : cause - Duplicate ticker id",
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    354: "Requested market data is not subscribed.",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2104: "Market data farm connection is OK:usfarm",
    2106: "HMDS data farm connection is OK:ushmds",
    2158: "Sec-def data farm connection is OK:secdefil",
    10089: "Requested market data requires additional subscription for API. See link in "
    "'Market Data Connections' dialog for more details.",
    10090: "Part of requested market data is not subscribed. Subscription-independent ticks "
    "are still active.Delayed market data is available.",
    10167: "Requested market data is not subscribed. Displaying delayed market data.",
    10190: "Max number of tick-by-tick requests has been reached.",
}

# Where the request (or order) id sits in a client message: after the message id and a
# version field in the older messages, right after the message id in the newer ones.
_ID_AFTER_VERSION = frozenset(
    {1, 2, 4, 7, 9, 10, 11, 21, 23, 25, 50, 51, 52, 53, 54, 55, 56, 57, 62, 63, 67, 68, 69, 70,
     74, 75, 76, 77}
)  # fmt: skip
_ID_FIRST = frozenset({3, 20, 22, 78, 79, 81, 83, 84, *range(86, 91), *range(92, 99), 100, 101,
                       102, 103, 104})  # fmt: skip
_HISTORICAL = frozenset({20, 87, 88})  # bars, head timestamp, histogram: HMDS requests
_ORDERS = frozenset({3, 4, 58})  # place, cancel, global cancel


def error_message(code: int) -> str:
    return ERROR_MESSAGES.get(code, f"Simulated error {code}")


def validation_error(cause: str) -> tuple[int, str]:
    """TWS's 321, which names what is wrong with a request."""
    return 321, error_message(321) + cause


def request_id(fields: list[str]) -> int:
    """The request id a message carries, or -1 (TWS's "no id") when it has none."""
    msg_id = int(fields[0])
    index = 2 if msg_id in _ID_AFTER_VERSION else 1 if msg_id in _ID_FIRST else 0
    try:
        return int(fields[index]) if index else -1
    except (IndexError, ValueError):
        return -1


def unsupported(msg_id: int) -> tuple[int, str]:
    """The (code, text) TWS-like error for a request the simulator does not implement."""
    what = f"request type {msg_id} is not supported by the gateway simulator"
    if msg_id in _HISTORICAL:
        return 162, f"Historical Market Data Service error message:{what}"
    if msg_id in _ORDERS:
        return 201, error_message(201) + what
    return validation_error(what)
