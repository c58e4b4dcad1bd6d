"""Compaction journals: `DIR/_state/compact-<id>.json`, written before a compaction touches
any part and removed when it is done. While one exists, its merged file (`tmp`, complete)
holds the rows of `target` and every file in `delete`; readers take it in their place, and
`compact.recover` finishes the swap after a crash."""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass

import orjson

from ibstream.store import layout

log = logging.getLogger(__name__)
PREFIX, SUFFIX = "compact-", ".json"


@dataclass(frozen=True)
class Journal:
    id: str
    tmp: str  # the merged file, written aside complete before the journal
    target: str  # the first part of the hour: the merged file is renamed onto it
    delete: tuple[str, ...]  # the other parts of the hour, deleted before the rename
    # (paths relative to the store, so a store moved after a crash still recovers)

    def path(self, root: layout.StoreRoot) -> str:
        return root.path(layout.STATE, f"{PREFIX}{self.id}{SUFFIX}")


def save(root: layout.StoreRoot, journal: Journal) -> None:
    """Write the journal so that it exists complete or not at all."""
    body = {"tmp": journal.tmp, "target": journal.target, "delete": list(journal.delete)}
    layout.write_small(root, journal.path(root), orjson.dumps(body))


def remove(root: layout.StoreRoot, journal: Journal) -> None:
    root.fs.delete_file(journal.path(root))


def pending(root: layout.StoreRoot) -> list[Journal]:
    """Every journal in the store (an unreadable one is reported and left alone)."""
    found = []
    for path, raw in layout.state_files(root, PREFIX):
        name = posixpath.basename(path)
        if not name.endswith(SUFFIX):
            continue
        try:
            body = orjson.loads(raw)
            found.append(
                Journal(
                    name[len(PREFIX) : -len(SUFFIX)],
                    body["tmp"],
                    body["target"],
                    tuple(body["delete"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable compaction journal %s (%s)", path, exc)
    return sorted(found, key=lambda j: j.id)
