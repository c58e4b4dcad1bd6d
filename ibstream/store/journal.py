"""Compaction journals: `DIR/_state/compact-<id>.json`, written before a compaction touches
any part and removed when it is done. While one exists, its merged file (`tmp`, complete)
holds the rows of `target` and every file in `delete`; readers take it in their place, and
`compact.recover` finishes the swap after a crash."""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass

import orjson
import pyarrow.fs as pafs

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
    path = journal.path(root)
    root.fs.create_dir(posixpath.dirname(path), recursive=True)
    target = layout.tmp_name(path) if root.local else path
    with root.fs.open_output_stream(target) as out:
        out.write(orjson.dumps(body))
    if target != path:
        root.fs.move(target, path)


def remove(root: layout.StoreRoot, journal: Journal) -> None:
    root.fs.delete_file(journal.path(root))


def pending(root: layout.StoreRoot) -> list[Journal]:
    """Every journal in the store (an unreadable one is reported and left alone)."""
    selector = pafs.FileSelector(root.path(layout.STATE), allow_not_found=True)
    found = []
    for info in root.fs.get_file_info(selector):
        name = info.base_name
        if info.type != pafs.FileType.File or not name.startswith(PREFIX):
            continue
        if not name.endswith(SUFFIX):
            continue
        try:
            with root.fs.open_input_stream(info.path) as stream:
                body = orjson.loads(stream.read())
            found.append(
                Journal(
                    name[len(PREFIX) : -len(SUFFIX)],
                    body["tmp"],
                    body["target"],
                    tuple(body["delete"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable compaction journal %s (%s)", info.path, exc)
    return sorted(found, key=lambda j: j.id)
