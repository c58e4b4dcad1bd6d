"""Contract specs: what a user types (`265598`, `AAPL`, `EURUSD`, `ES`, `ES:FUT:CME`,
`ES:FUT:CME:202703`) turned into the fields of an IB contract query, and the pick among
several matches (the front month: the nearest expiry not yet past on IB's clock).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import ContractInfo

FX_CURRENCIES = frozenset(
    "USD EUR GBP JPY CHF AUD CAD NZD SEK NOK DKK HKD SGD CNH MXN ZAR PLN CZK HUF TRY ILS KRW".split()
)
# Futures roots a user names without an exchange, and where they trade.
FUTURE_EXCHANGES = {
    "ES": "CME",
    "MES": "CME",
    "NQ": "CME",
    "MNQ": "CME",
    "RTY": "CME",
    "M2K": "CME",
    "YM": "CBOT",
    "MYM": "CBOT",
    "ZN": "CBOT",
    "ZB": "CBOT",
    "CL": "NYMEX",
    "MCL": "NYMEX",
    "NG": "NYMEX",
    "GC": "COMEX",
    "MGC": "COMEX",
    "SI": "COMEX",
}
_SEC_TYPES = {"STK", "CASH", "FUT", "IND", "CFD", "CRYPTO", "CONTFUT"}


def parse_spec(spec: str | int) -> dict:
    """Return IB contract fields for a spec; raises CONTRACT_NOT_FOUND for a malformed one.

    Forms: a conId; `SYMBOL`; `BASE.QUOTE` or `BASEQUOTE` for FX; a known futures root;
    or explicit `SYMBOL:SECTYPE[:EXCHANGE[:CURRENCY][:EXPIRY]]`, EXPIRY a contract month
    `YYYYMM` or last trading day `YYYYMMDD` (it may stand in the CURRENCY place:
    `ES:FUT:CME:202703`).
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        con_id = int(spec)
        if con_id <= 0:
            raise _bad(spec, "a conId is a positive integer")
        return {"conId": con_id}
    if not isinstance(spec, str) or not spec.strip():
        raise _bad(spec, "give a conId such as 265598 or a symbol such as AAPL")
    text = spec.strip().upper()
    if ":" in text:
        parts = text.split(":")
        expiry = parts.pop() if len(parts) > 3 and parts[-1].isdigit() else ""
        if (
            len(parts) > 4
            or len(parts) < 2
            or not parts[0]
            or parts[1] not in _SEC_TYPES
            or (expiry and len(expiry) not in (6, 8))
        ):
            raise _bad(
                spec,
                "explicit specs look like SYMBOL:SECTYPE[:EXCHANGE[:CURRENCY][:EXPIRY]], "
                f"SECTYPE one of {', '.join(sorted(_SEC_TYPES))}, EXPIRY YYYYMM or YYYYMMDD",
            )
        fields = {"symbol": parts[0], "secType": parts[1]}
        if len(parts) > 2 and parts[2]:
            fields["exchange"] = parts[2]
        if len(parts) > 3 and parts[3]:
            fields["currency"] = parts[3]
        if expiry:
            fields["lastTradeDateOrContractMonth"] = expiry
        return fields
    fx = _fx_pair(text)
    if fx:
        return {"symbol": fx[0], "currency": fx[1], "secType": "CASH", "exchange": "IDEALPRO"}
    if text in FUTURE_EXCHANGES:
        return {
            "symbol": text,
            "secType": "FUT",
            "exchange": FUTURE_EXCHANGES[text],
            "currency": "USD",
        }
    if not text.replace(".", "").replace(" ", "").isalnum():
        raise _bad(spec, "symbols are letters and digits, e.g. AAPL or BRK B")
    return {"symbol": text, "secType": "STK", "exchange": "SMART", "currency": "USD"}


def pick_front(matches: list, today: str | None = None) -> object:
    """Of several matches, the nearest future not expired by `today` (YYYYMMDD, IB's date;
    the host's when not given), else the first one."""
    today = today or datetime.now(UTC).strftime("%Y%m%d")
    dated = [m for m in matches if _expiry(m) and _expiry(m) >= today]
    return min(dated, key=_expiry) if dated else matches[0]


def _expiry(details: object) -> str:
    return (details.contract.lastTradeDateOrContractMonth or "")[:8]  # type: ignore[attr-defined]


def _fx_pair(text: str) -> tuple[str, str] | None:
    base, quote = (text.split(".", 1) + [""])[:2] if "." in text else (text[:3], text[3:])
    if len(text.replace(".", "")) == 6 and base in FX_CURRENCIES and quote in FX_CURRENCIES:
        return base, quote
    return None


def _bad(spec: object, hint: str) -> StreamError:
    return StreamError(
        ErrorCode.CONTRACT_NOT_FOUND,
        f"cannot read contract {spec!r}: {hint}",
        details={"contract": spec},
    )


def contract_info(details: object) -> ContractInfo:
    """ib_insync / ib_async ContractDetails -> ContractInfo."""
    c = details.contract  # type: ignore[attr-defined]
    return ContractInfo(
        contract_id=c.conId,
        symbol=c.symbol,
        sec_type=c.secType,
        exchange=c.exchange,
        currency=c.currency,
        local_symbol=c.localSymbol,
        min_tick=details.minTick,  # type: ignore[attr-defined]
        description=details.longName,
        last_trade_date=c.lastTradeDateOrContractMonth,  # type: ignore[attr-defined]
        multiplier=c.multiplier,
    )
