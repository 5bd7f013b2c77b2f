"""Where recordings are kept: one small interface and its directory implementation.

A recorder writes a file locally while the meeting runs (:meth:`RecordingStorage.begin`
gives it a path to write to), then hands it over with :meth:`RecordingStorage.commit` along
with its metadata (:class:`TrackMeta`). The hub lists a meeting's files
(:meth:`RecordingStorage.files`, :meth:`RecordingStorage.pending`) and serves downloads from
:meth:`RecordingStorage.local_path`. Writing locally then committing is what an
object-storage implementation needs too (upload on commit); the directory implementation
commits with a rename.

Layout of :class:`DirectoryStorage` under its root::

    <meetingId>/incomplete/<name>        being written (a recorder holds it open)
    <meetingId>/incomplete/<name>.json   its note: whose it is (to salvage it if the writer dies)
    <meetingId>/tracks/<name>            committed: a per-participant-track file (or mix.ogg)
    <meetingId>/tracks/<name>.json       its TrackMeta

Names are checked (:func:`valid_name`) before they touch a path: they come from peer ids and,
on downloads, from URLs.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")


def valid_name(name: str) -> bool:
    """A meeting id or file name safe to use as one path component (no ``/``, no ``..``)."""
    return bool(_NAME.match(name)) and ".." not in name


class TrackMeta(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """What a committed file is: a participant's ``track`` or the meeting's ``mix`` (then
    without peer and user). Times in ms on the meeting's clock (its start = 0)."""

    kind: str = "track"
    peer_id: str
    user_id: str
    mime_type: str
    start_ms: int
    duration_ms: int
    packets: int
    bytes: int = 0


@dataclass(frozen=True)
class StoredFile:
    """A committed file: its name within the meeting, its metadata, its size in bytes."""

    name: str
    meta: TrackMeta
    size: int


@dataclass(frozen=True)
class PendingFile:
    """A file still being written: its name and when it last grew (``time.time()``)."""

    name: str
    modified: float


class RecordingStorage(Protocol):
    """Storage of recording files (directory; object storage later)."""

    def begin(self, meeting_id: str, name: str) -> Path:
        """A local path to write ``name`` of ``meeting_id`` to (its folder exists)."""

    def note(self, meeting_id: str, name: str, meta: TrackMeta) -> None:
        """What a file being written is (its participant): kept beside it, so a file whose
        writer died can still be committed with its owner (:meth:`abandoned`)."""

    def abandoned(self, meeting_id: str, name: str) -> tuple[Path, TrackMeta | None]:
        """A pending file's local path and its :meth:`note` (None if there was none)."""

    def commit(self, meeting_id: str, name: str, meta: TrackMeta) -> StoredFile:
        """The file written at :meth:`begin`'s path is complete: keep it with ``meta``."""

    def discard(self, meeting_id: str, name: str) -> None:
        """Forget a file begun and never committed (nothing worth keeping in it)."""

    def files(self, meeting_id: str) -> list[StoredFile]:
        """Committed files of a meeting, by name."""

    def pending(self, meeting_id: str) -> list[PendingFile]:
        """Files of a meeting begun and not committed yet."""

    def local_path(self, meeting_id: str, name: str) -> Path | None:
        """Where a committed file can be read, or None."""


class DirectoryStorage:
    """Recordings in a directory (the embedded default)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _folder(self, meeting_id: str, part: str) -> Path:
        if not valid_name(meeting_id):
            raise ValueError(f"bad meeting id {meeting_id!r}")
        return self.root / meeting_id / part

    def begin(self, meeting_id: str, name: str) -> Path:
        if not valid_name(name):
            raise ValueError(f"bad file name {name!r}")
        folder = self._folder(meeting_id, "incomplete")
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def note(self, meeting_id: str, name: str, meta: TrackMeta) -> None:
        path = self.begin(meeting_id, name).with_name(f"{name}.json")
        path.write_bytes(msgspec.json.encode(meta))

    def abandoned(self, meeting_id: str, name: str) -> tuple[Path, TrackMeta | None]:
        path = self.begin(meeting_id, name)
        try:
            meta = msgspec.json.decode(path.with_name(f"{name}.json").read_bytes(),
                                       type=TrackMeta)
        except (OSError, msgspec.DecodeError):
            meta = None
        return path, meta

    def commit(self, meeting_id: str, name: str, meta: TrackMeta) -> StoredFile:
        source = self.begin(meeting_id, name)
        folder = self._folder(meeting_id, "tracks")
        folder.mkdir(parents=True, exist_ok=True)
        size = source.stat().st_size
        meta = msgspec.structs.replace(meta, bytes=size)
        # The metadata first: a file in tracks/ always has its .json (readers list by it).
        sidecar = folder / f"{name}.json"
        tmp = sidecar.with_suffix(".json.tmp")
        tmp.write_bytes(msgspec.json.encode(meta))
        os.replace(tmp, sidecar)
        os.replace(source, folder / name)
        source.with_name(f"{name}.json").unlink(missing_ok=True)
        return StoredFile(name=name, meta=meta, size=size)

    def discard(self, meeting_id: str, name: str) -> None:
        path = self.begin(meeting_id, name)
        path.unlink(missing_ok=True)
        path.with_name(f"{name}.json").unlink(missing_ok=True)

    def files(self, meeting_id: str) -> list[StoredFile]:
        if not valid_name(meeting_id):
            return []
        folder = self._folder(meeting_id, "tracks")
        found: list[StoredFile] = []
        for sidecar in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            media = sidecar.with_suffix("")
            try:
                meta = msgspec.json.decode(sidecar.read_bytes(), type=TrackMeta)
                size = media.stat().st_size
            except (OSError, msgspec.DecodeError):
                continue  # a commit in progress, or a damaged sidecar: not a file yet
            found.append(StoredFile(name=media.name, meta=meta, size=size))
        return found

    def pending(self, meeting_id: str) -> list[PendingFile]:
        if not valid_name(meeting_id):
            return []
        folder = self._folder(meeting_id, "incomplete")
        found: list[PendingFile] = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            if path.suffix == ".json":
                continue  # a note()
            try:
                found.append(PendingFile(name=path.name, modified=path.stat().st_mtime))
            except OSError:
                continue  # committed meanwhile
        return found

    def local_path(self, meeting_id: str, name: str) -> Path | None:
        if not valid_name(meeting_id) or not valid_name(name) or name.endswith(".json"):
            return None
        path = self._folder(meeting_id, "tracks") / name
        return path if path.is_file() and path.with_name(f"{name}.json").is_file() else None


def age_s(pending: PendingFile) -> float:
    """Seconds since a pending file last grew."""
    return max(0.0, time.time() - pending.modified)
