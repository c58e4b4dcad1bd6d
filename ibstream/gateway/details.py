"""The contractDetails (10) message, field for field as ib_insync's decoder reads it."""

from __future__ import annotations

from datetime import date

from ibstream.gateway.instrument import SimContract


def contract_details_fields(c: SimContract, req_id: int, version: int, today: date) -> list:
    """The fields of one contractDetails message for server version `version`."""
    head: list[object] = [10, 8] if version < 164 else [10]
    hours = c.hours(today)
    fields = head + [
        req_id, c.symbol, c.sec_type, c.last_trade_date, 0, "", c.exchange, c.currency,
        c.local_symbol, c.market_name, c.trading_class, c.con_id, c.min_tick,
    ]  # fmt: skip
    if version < 164:
        fields.append(1)  # mdSizeMultiplier
    fields += [
        c.multiplier, c.order_types, c.valid_exchanges, 1, c.under_con_id, c.long_name,
        c.primary_exchange, c.contract_month or c.last_trade_date[:6], c.industry, c.category,
        c.subcategory, c.time_zone_id, hours, hours, "", "", 0,
        1, c.under_symbol, c.under_sec_type, c.market_rule_ids, c.last_trade_date,
        c.stock_type,
    ]  # fmt: skip
    if version == 163:
        fields.append(c.size_increment)
    if version >= 164:
        fields += [c.size_increment, c.size_increment, c.size_increment]
    return fields
