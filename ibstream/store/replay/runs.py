"""Sequences across server runs, as a replay sends them.

Each run of the server numbers its streams from 1 again (a new `server_id`), so a stream
recorded over several runs (a restart, a crash) has sequences that go back. A client drops
a sequence at or below one it has as a duplicate, so the replay continues them instead: each
run's recorded sequences are shifted by the replayed last sequence of the run before it. A
recording of one run replays its recorded sequences exactly; one of several, contiguous
sequences wherever the recording has no hole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ibstream.store.replay.footers import PartFile


@dataclass(frozen=True)
class Segment:
    """The rows of one server run in one part: their run and raw first and last sequence."""

    server_id: str
    first: int
    last: int


def segments(server_ids: Sequence[str], sequences: np.ndarray) -> tuple[Segment, ...]:
    """A part's rows (in order) cut where the run changes."""
    ids = np.asarray(server_ids, dtype=object)
    cuts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), len(ids)]
    return tuple(
        Segment(str(ids[lo]), int(sequences[lo:hi].min()), int(sequences[lo:hi].max()))
        for lo, hi in zip(cuts, cuts[1:], strict=False)
    )


class Runs:
    """One stream's server runs in recorded order, their shifts and each part's place."""

    def __init__(self, parts: list[PartFile]):
        self.ids: list[str] = []
        self.offsets: list[int] = []
        self._last_raw: list[int] = []
        self.first_run: dict[str, int] = {}  # part path -> run of its first row
        self.part_first: dict[str, int] = {}  # part path -> replayed first sequence
        self.part_last: dict[str, int] = {}  # part path -> replayed last sequence
        for part in parts:
            for n, segment in enumerate(part.segments):
                if not self.ids or segment.server_id != self.ids[-1]:
                    self.offsets.append(self.last)
                    self.ids.append(segment.server_id)
                    self._last_raw.append(segment.last)
                else:
                    self._last_raw[-1] = max(self._last_raw[-1], segment.last)
                if n == 0:
                    self.first_run[part.path] = len(self.ids) - 1
                    self.part_first[part.path] = segment.first + self.offsets[-1]
            self.part_last[part.path] = part.segments[-1].last + self.offsets[-1]

    @property
    def last(self) -> int:
        """The replayed last sequence of the stream (0 when it has no rows)."""
        return self.offsets[-1] + self._last_raw[-1] if self.ids else 0

    @property
    def single(self) -> bool:
        return len(self.ids) <= 1


class Cursor:
    """Shifts a part's sequences batch after batch (the run carries over between batches)."""

    def __init__(self, runs: Runs, part: PartFile):
        self.runs = runs
        self.run = runs.first_run[part.path]

    def shift(self, sequences: np.ndarray, server_ids: Sequence[str] | None) -> np.ndarray:
        runs = self.runs
        if runs.single or server_ids is None:
            return sequences + runs.offsets[self.run] if runs.offsets else sequences
        ids = np.asarray(server_ids, dtype=object)
        changed = np.empty(len(ids), bool)
        changed[0] = ids[0] != runs.ids[self.run]
        changed[1:] = ids[1:] != ids[:-1]
        index = self.run + np.cumsum(changed)
        self.run = int(index[-1])
        return sequences + np.asarray(runs.offsets, np.int64)[index]
