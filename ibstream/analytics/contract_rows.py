"""The rows of a tick frame by contract, for classification.

One contract: nothing to group. A few (up to 8, found by `grouping.few_key_masks`: the usual
case of a handful of subscriptions): each row gets a small contract code and the rows stay
in arrival order; what classification needs per contract is counted, not sorted (`Counts`:
one int32 cumsum per contract over the rows), which costs a fraction of putting every column
into contract order and back. Many: the rows are grouped (`grouping.group_rows`) and put
in contract order.
"""

from __future__ import annotations

import numpy as np

from ibstream.analytics.grouping import few_key_masks, group_rows, narrow


class Contracts:
    """The rows of a tick frame grouped by contract: `ids` the distinct contracts (in order
    of first appearance when there are a few), `ends` where each contract's rows end in
    contract order, `codes` each row's contract number (a few contracts only, else None),
    `order` the rows in contract order (arrival order within one; None for one contract;
    for a few contracts made when first asked for)."""

    def __init__(self, contract: np.ndarray) -> None:
        self.codes: np.ndarray | None = None
        self._order: np.ndarray | None = None
        bounds = (contract.min(), contract.max()) if len(contract) else (0, 0)
        if bounds[0] == bounds[1]:
            self.ids = contract[:1]
            self.ends = np.array([len(contract)])
            self.firsts = np.zeros(len(self.ids), dtype=np.intp)
            self.lasts = self.firsts + len(contract) - 1
            return
        few = contract_codes(contract, bounds)
        if few is not None:
            self.ids, self.codes, self.firsts, self.lasts, counts = few
            self.ends = np.cumsum(counts)
            return
        g = group_rows(contract, sort=False)
        self.ids, self._order, self.ends = g.keys[0], g.order, g.starts + g.lengths
        self.firsts, self.lasts = g.order.take(g.starts), g.order.take(self.ends - 1)

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def order(self) -> np.ndarray | None:
        if self._order is None and self.codes is not None:
            self._order = np.concatenate(members(self.codes, self.size))
        return self._order

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """Positions in contract order -> rows of the frame."""
        order = self.order
        return positions if order is None else order.take(positions)


def contract_codes(
    contract: np.ndarray, bounds: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """For at most 8 distinct integer contracts (else None, `grouping.few_key_masks`):
    the ids in order of first appearance, each row's code (uint8, the id's place there),
    each contract's first and last row and its count of rows. `bounds`: the least and
    greatest id, if known."""
    keys = narrow(contract, bounds)
    found = few_key_masks(keys)
    if found is None:
        return None
    if keys.dtype == np.uint8 and keys.take([at for at, _ in found]).tolist() == list(
        range(len(found))
    ):  # ids lo, lo + 1, ... in order of first appearance: their offsets are the codes
        codes = keys
    else:
        codes = np.zeros(len(contract), dtype=np.uint8)
        for n, (_, mine) in enumerate(found[1:], 1):
            codes += mine.view(np.uint8) * np.uint8(n)
    firsts = np.array([at for at, _ in found])
    lasts = np.array([_last(mine) for _, mine in found])
    counts = np.array([np.count_nonzero(mine) for _, mine in found])
    return contract.take(firsts), codes, firsts, lasts, counts


def _last(mine: np.ndarray) -> int:
    """The last True place (there is one), searched from the end in growing blocks: a
    contract's last row is usually near the end."""
    end, step = len(mine), 4096
    while True:
        start = max(0, end - step)
        found = np.flatnonzero(mine[start:end])
        if len(found):
            return start + int(found[-1])
        end, step = start, step * 4


class Counts:
    """How many of a sequence's items (`codes`: each one's contract, 0..k-1; `counts`: how
    many each contract has in all) belong to each contract up to each place, as slots of a
    contract-ordered layout: `table[c, j]` is the slot of contract c's last item among the
    first j items, where contract c's part begins at `starts[c]`, after `gap` free slots
    (one: a place for carried state, the slot given while the contract has no item yet).
    One int32 cumsum per contract; no sort."""

    def __init__(self, codes: np.ndarray, counts: np.ndarray, gap: int = 0) -> None:
        n, k = len(codes), len(counts)
        dtype = np.int32 if n + k * (gap + 1) < 2**31 else np.int64
        table = np.empty((k, n + 1), dtype=dtype)
        per = np.arange(k, dtype=codes.dtype)[:, None]
        np.equal(codes, per, out=table[:, 1:], casting="unsafe")
        self.counts = counts  # each contract's items in all
        self.starts = np.cumsum(counts + gap) - counts
        table[:, 0] = self.starts - 1
        np.cumsum(table, axis=1, out=table)
        self.table = table

    @property
    def ends(self) -> np.ndarray:
        """Where each contract's part ends (its last item's slot + 1)."""
        return self.starts + self.counts

    def at(self, codes: np.ndarray, places: np.ndarray) -> np.ndarray:
        """`table[codes, places]`: per (contract, place), the slot of that contract's last
        item before the place (intp). One buffer holds the flat places, then the slots (a
        temporary of a million rows costs a pass of its own)."""
        flat = codes.astype(np.intp)
        flat *= self.table.shape[1]
        flat += places
        flat[...] = self.table.ravel().take(flat)
        return flat


def members(codes: np.ndarray, k: int) -> list[np.ndarray]:
    """The places of each contract's items (codes 0..k-1), ascending."""
    return [np.flatnonzero(codes == c) for c in range(k)]
