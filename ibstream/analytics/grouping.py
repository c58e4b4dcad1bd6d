"""Rows grouped by key (contract, bar) and exact left-to-right sums within each group.

`running_sums` is the core: a left-to-right float sum within each group, vectorised. Because
it is strictly sequential, a total carried over from an earlier batch (put in front of the
group as one more row) continues to the same bits as a single pass over all rows; that is
how the incremental engine equals the batch functions exactly. Grouping by one key sorts
small integer codes of it, which numpy does by radix sort in linear time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

EARLIEST = np.iinfo(np.int64).min  # a time (ns) before any other
_FEW = 8  # keys up to which grouping gathers each key's rows rather than sorting


@dataclass(frozen=True)
class Groups:
    """Rows grouped by keys; groups numbered in ascending key order (see `group_rows`), rows
    kept in order within a group."""

    keys: tuple[np.ndarray, ...]  # the key values of each group
    order: np.ndarray  # row numbers sorted by group, arrival order within a group
    starts: np.ndarray  # where each group begins in `order`

    @property
    def size(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(np.append(self.starts, len(self.order)))

    @property
    def first(self) -> np.ndarray:
        return self.order[self.starts]

    @property
    def last(self) -> np.ndarray:
        return self.order[np.append(self.starts, len(self.order))[1:] - 1]

    @property
    def codes(self) -> np.ndarray:
        out = np.empty(len(self.order), dtype=np.int64)
        out[self.order] = np.repeat(np.arange(self.size), self.lengths)
        return out

    def members(self) -> list[np.ndarray]:
        """The row numbers of each group (a Python loop over these is one per group)."""
        return np.split(self.order, self.starts[1:]) if self.size else []

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        if not self.size:
            return values[:0]
        return ufunc.reduceat(values[self.order], self.starts)


def group_rows(*keys: np.ndarray, sort: bool = True) -> Groups:
    """Group rows by the key arrays (first key sorts first); one key without `sort` numbers
    the groups in order of first appearance instead (cheaper)."""
    few = few_keys(keys[0]) if len(keys) == 1 else None
    if few is not None:  # a few integer keys: each one's rows in turn, nothing hashed
        ids, members = few
        if sort:
            ranks = np.argsort(ids, kind="stable")
            ids, members = ids[ranks], [members[i] for i in ranks]
        counts = np.array([len(m) for m in members])
        return Groups((ids,), np.concatenate(members), np.cumsum(counts) - counts)
    if len(keys) == 1 and len(keys[0]):  # one key: its small integer codes
        codes, uniques = pd.factorize(keys[0], sort=sort)
        small = small_codes(codes, len(uniques))
        if len(uniques) <= _FEW:  # each key's rows in turn
            members = [np.flatnonzero(small == i) for i in range(len(uniques))]
            order, counts = np.concatenate(members), np.array([len(m) for m in members])
        else:  # numpy's stable sort of 8 or 16-bit integers is a radix sort
            order = np.argsort(small, kind="stable")
            counts = np.bincount(codes, minlength=len(uniques))
        return Groups((uniques,), order, np.cumsum(counts) - counts)
    order = np.lexsort(keys[::-1]) if len(keys[0]) else np.zeros(0, dtype=np.int64)
    ordered = [k[order] for k in keys]
    change = np.zeros(len(order), dtype=bool)
    change[:1] = True
    for k in ordered:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    return Groups(tuple(k[starts] for k in ordered), order, starts)


def few_keys(keys: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """The distinct values of integer `keys` in order of first appearance and each one's
    rows, when there are at most `_FEW` of them (else None)."""
    found = few_key_masks(keys)
    if found is None:
        return None
    return keys.take([at for at, _ in found]), [np.flatnonzero(mine) for _, mine in found]


def few_key_masks(keys: np.ndarray) -> list[tuple[int, np.ndarray]] | None:
    """Each distinct value of integer `keys` in order of first appearance as (its first row,
    the mask of its rows), when there are at most `_FEW` of them (else None). A comparison
    per key costs a fraction of hashing every row (`pd.factorize`); a sample first tells many
    keys apart."""
    if keys.dtype.kind not in "iu" or not len(keys):
        return None
    if len(np.unique(keys[:: max(1, len(keys) // 256)])) > _FEW:
        return None
    keys = narrow(keys)
    found: list[tuple[int, np.ndarray]] = []
    rest = None  # rows whose key is not found yet
    at = 0
    while True:
        if len(found) == _FEW:
            return None
        mine = keys == keys[at]
        found.append((at, mine))
        rest = ~mine if rest is None else np.greater(rest, mine, out=rest)  # rest and not mine
        at = int(rest.argmax())
        if not rest[at]:
            return found


def narrow(keys: np.ndarray, bounds: tuple[int, int] | None = None) -> np.ndarray:
    """Integer `keys` within 256 of each other (`bounds`: their least and greatest, if known)
    as their uint8 offsets from the least (equal where the keys are): each later comparison
    then reads a byte a row, not eight. Other keys as they are."""
    if keys.dtype.itemsize == 1 or keys.dtype.kind not in "iu" or not len(keys):
        return keys
    lo, hi = (keys.min(), keys.max()) if bounds is None else bounds
    lo, hi = int(lo), int(hi)
    if hi - lo >= 2**8:
        return keys
    low = keys.astype(np.uint8)  # each key's low byte (a cast wraps modulo 256)
    low -= np.uint8(lo % 2**8)  # the offset, modulo 256: all of it
    return low


def small_codes(codes: np.ndarray, k: int) -> np.ndarray:
    """Codes 0..k-1 in the narrowest unsigned type (cheap to compare and to sort)."""
    return codes.astype(np.uint8 if k <= 2**8 else np.uint16 if k <= 2**16 else np.intp)


def grouped_cumsum(values: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Per row, the left-to-right sum of `values` over the earlier rows with its key and
    itself (arrival order). One key value: a plain `np.cumsum`, nothing sorted."""
    bounds = (key.min(), key.max()) if len(key) else (0, 0)
    if bounds[0] == bounds[1]:
        return np.cumsum(values)
    few = few_key_masks(narrow(key, bounds)) if key.dtype.kind in "iu" else None
    if few is not None and values.dtype == np.float64:
        return _paired_cumsums(values, [np.flatnonzero(mine) for _, mine in few])
    if few is not None:  # each key's rows summed on their own
        out = np.empty_like(values)
        for _, mine in few:
            rows = np.flatnonzero(mine)
            part = values.take(rows)
            out[rows] = np.cumsum(part, out=part)
        return out
    return running_sums(values[:, None], group_rows(key, sort=False))[:, 0]


def _paired_cumsums(values: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    """Per row, the running sum of float64 `values` over its member list (ascending rows),
    two lists at a time: one's values in the real parts of a complex array, the other's in
    the imaginary parts, gathered interleaved in one `take`, summed by one complex cumsum
    and put back by one scatter. A float cumsum waits on each add (and its store) before the
    next; the complex one makes two independent adds in that time. Each part is still a
    plain left-to-right float sum: the same bits as a cumsum of its own. The pairs share
    one index and one value buffer (each new array of a million rows costs page faults)."""
    n = len(values)
    out = np.empty(n + 1, dtype=np.float64)  # n: where the shorter list's padding goes
    members = sorted(members, key=len, reverse=True)
    if len(members) % 2:
        members.append(members[0][:0])  # the last one paired with none
    rows = np.empty(2 * len(members[0]), dtype=np.intp)
    pairs = np.empty(len(rows), dtype=np.float64)
    for longer, shorter in zip(members[::2], members[1::2], strict=True):
        at, both = rows[: 2 * len(longer)], pairs[: 2 * len(longer)]
        at[::2] = longer
        at[1::2][: len(shorter)] = shorter
        at[1::2][len(shorter) :] = n
        values.take(at, out=both, mode="clip")  # clip: no buffered copy (n reads the last)
        both[1::2][len(shorter) :] = 0.0
        summed = both.view(np.complex128)
        np.cumsum(summed, out=summed)
        out[at] = both
    return out[:n]


def positions(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each query value in the sorted `keys`, -1 where absent."""
    pos = np.searchsorted(keys, query)
    found = pos < len(keys)
    found[found] = keys[pos[found]] == query[found]
    return np.where(found, pos, -1)


def running_sums(values: np.ndarray, groups: Groups) -> np.ndarray:
    """Per row, the left-to-right sum of `values` (n, k) over the rows of its group up to it.

    Every sum is `np.cumsum`, which adds strictly in order. A long group is one slice of the
    group-sorted rows (one call per group, at least `_LONG` rows each); short groups are
    padded into blocks of equal power-of-two width (at most twice their rows) and summed
    along the block in one call per width, so no Python loop runs per row.
    """
    n, k = len(groups.order), values.shape[1]
    if groups.size == 1:
        return np.cumsum(values, axis=0)
    ordered = values[groups.order]
    out = np.empty_like(ordered)
    lengths = groups.lengths
    long = lengths >= _LONG
    for start, length in zip(groups.starts[long], lengths[long], strict=True):
        np.cumsum(ordered[start : start + length], axis=0, out=out[start : start + length])
    if not long.all():
        group_of = np.repeat(np.arange(groups.size), lengths)
        pos = np.arange(n) - np.repeat(groups.starts, lengths)
        width = np.where(long, -1, np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64))
        for exp in np.unique(width[~long]):
            members = np.flatnonzero(width == exp)
            rows = np.flatnonzero(width[group_of] == exp)
            cell = (np.searchsorted(members, group_of[rows]) << exp) + pos[rows]
            block = np.zeros((len(members), 1 << int(exp), k))
            block.reshape(-1, k)[cell] = ordered[rows]
            out[rows] = np.cumsum(block, axis=1).reshape(-1, k)[cell]
    result = np.empty_like(out)
    result[groups.order] = out
    return result


_LONG = 64  # rows from which a group is summed on its own


def previous_in_group(
    values: np.ndarray, groups: Groups, first: float | np.ndarray = 0.0
) -> np.ndarray:
    """Per row, the value of the row before it in its group; `first` (one, or one per group)
    for a group's first row."""
    ordered = values[groups.order]
    shifted = np.empty_like(ordered)
    shifted[1:] = ordered[:-1]
    shifted[groups.starts] = first
    out = np.empty_like(shifted)
    out[groups.order] = shifted
    return out


def goes_back(time: np.ndarray, groups: Groups, since: int | np.ndarray = EARLIEST) -> np.ndarray:
    """Per row, whether its time is before the time of the row before it in its group (or,
    for a group's first row, before `since`: one, or one per group)."""
    return previous_in_group(time, groups, since) > time
