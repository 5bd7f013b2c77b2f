"""Where recordings are kept: one small interface, its directory implementation, and the
choice between it and object storage (:mod:`signaling.recording_s3`).

The interface has two sides:

- **the writer's** (the recorder, on the event loop; never waits on the network): a file is
  written locally while the meeting runs (:meth:`RecordingStorage.begin` gives the path),
  :meth:`~RecordingStorage.note` says whose it is, :meth:`~RecordingStorage.commit` hands it
  over with its metadata (:class:`TrackMeta`) and :meth:`~RecordingStorage.discard` drops an
  empty one. The directory commits with a rename; S3 queues an upload from its local spool.
- **the reader's** (the hub, async): :meth:`~RecordingStorage.list_files`,
  :meth:`~RecordingStorage.list_pending`, :meth:`~RecordingStorage.fetch` (a local copy to mix),
  :meth:`~RecordingStorage.put_file` (the mix, a salvaged file; awaited until stored),
  :meth:`~RecordingStorage.read` (a byte range, for downloads), and a failed mix's reason
  (:meth:`~RecordingStorage.mark_failed`, :meth:`~RecordingStorage.failure`), kept in the
  storage so every hub worker reports it.

Layout of :class:`DirectoryStorage` under its root::

    <meetingId>/incomplete/<name>        being written (a recorder holds it open)
    <meetingId>/incomplete/<name>.json   its note: whose it is (to salvage it if the writer dies)
    <meetingId>/tracks/<name>            committed: a per-participant-track file (or mix.ogg)
    <meetingId>/tracks/<name>.json       its TrackMeta
    <meetingId>/failed.json              the mix failed: {"reason", "at"}

Names are checked (:func:`valid_name`) before they touch a path: they come from peer ids and,
on downloads, from URLs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from .s3 import S3Config

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
    """Storage of recording files: :class:`DirectoryStorage` or
    :class:`~signaling.recording_s3.S3Storage` (one contract test suite runs against both)."""

    # -- the writer's side: local work only, safe to call on the event loop

    def begin(self, meeting_id: str, name: str) -> Path:
        """A local path to write ``name`` of ``meeting_id`` to (its folder exists)."""

    def note(self, meeting_id: str, name: str, meta: TrackMeta) -> None:
        """What a file being written is (its participant): kept beside it, so a file whose
        writer died can still be committed with its owner (:meth:`fetch_abandoned`)."""

    def commit(self, meeting_id: str, name: str, meta: TrackMeta) -> StoredFile:
        """The file written at :meth:`begin`'s path is complete: keep it with ``meta``. It is
        listed by :meth:`list_files` once stored (at once, or after its upload); until then it
        stays in :meth:`list_pending`."""

    def discard(self, meeting_id: str, name: str) -> None:
        """Forget a file begun and never committed (nothing worth keeping in it)."""

    # -- the reader's side

    async def list_files(self, meeting_id: str) -> list[StoredFile]:
        """Committed files of a meeting, by name."""

    async def list_pending(self, meeting_id: str) -> list[PendingFile]:
        """Files of a meeting begun and not stored yet."""

    async def stat(self, meeting_id: str, name: str) -> StoredFile | None:
        """One committed file, or None."""

    async def fetch(self, meeting_id: str, name: str, folder: Path) -> Path | None:
        """A local path holding committed file ``name`` (a copy in ``folder`` when the storage
        is remote), or None if there is no such file."""

    async def fetch_abandoned(self, meeting_id: str, name: str,
                              folder: Path) -> tuple[Path | None, TrackMeta | None]:
        """A pending file whose writer died: a local path of its data (None if none reached
        the storage) and its :meth:`note` (None if there was none)."""

    async def put_file(self, meeting_id: str, name: str, source: Path,
                       meta: TrackMeta) -> StoredFile:
        """Store the local file ``source`` as committed file ``name`` (the mix, a salvaged
        track) and forget its pending note; returns once stored. ``source`` is consumed."""

    async def mark_failed(self, meeting_id: str, reason: str) -> None:
        """The meeting's mix failed for good: every worker's :meth:`failure` says so."""

    async def failure(self, meeting_id: str) -> str | None:
        """Why the meeting's mix failed, or None."""

    def local_path(self, meeting_id: str, name: str) -> Path | None:
        """Where a committed file can be read on this machine, or None (remote storage: use
        :meth:`read`)."""

    def read(self, meeting_id: str, name: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` (inclusive) of a committed file, chunk by chunk."""

    async def start(self) -> None:
        """Start background work (S3: the uploader, and adopting dead writers' spools)."""

    async def aclose(self) -> None:
        """Stop (idempotent); what is not stored yet is kept to be stored later."""


class DirectoryStorage:
    """Recordings in a directory (the embedded default). Its synchronous ``files``,
    ``pending``, ``abandoned`` and ``local_path`` are the same reads without a loop (tests,
    tools)."""

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


    # ------------------------------------------------------------------ the reader's side

    async def list_files(self, meeting_id: str) -> list[StoredFile]:
        return await asyncio.to_thread(self.files, meeting_id)

    async def list_pending(self, meeting_id: str) -> list[PendingFile]:
        return await asyncio.to_thread(self.pending, meeting_id)

    async def stat(self, meeting_id: str, name: str) -> StoredFile | None:
        path = self.local_path(meeting_id, name)
        if path is None:
            return None
        try:
            meta = msgspec.json.decode(path.with_name(f"{name}.json").read_bytes(),
                                       type=TrackMeta)
            return StoredFile(name=name, meta=meta, size=path.stat().st_size)
        except (OSError, msgspec.DecodeError):
            return None

    async def fetch(self, meeting_id: str, name: str, folder: Path) -> Path | None:
        return self.local_path(meeting_id, name)  # in place: nothing to copy

    async def fetch_abandoned(self, meeting_id: str, name: str,
                              folder: Path) -> tuple[Path | None, TrackMeta | None]:
        path, meta = self.abandoned(meeting_id, name)
        return (path if path.is_file() else None), meta

    async def put_file(self, meeting_id: str, name: str, source: Path,
                       meta: TrackMeta) -> StoredFile:
        dest = self.begin(meeting_id, name)
        if source.resolve() != dest.resolve():
            await asyncio.to_thread(shutil.move, source, dest)
        return self.commit(meeting_id, name, meta)

    async def mark_failed(self, meeting_id: str, reason: str) -> None:
        folder = self._folder(meeting_id, "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "failed.json").write_bytes(msgspec.json.encode(
            {"reason": reason[:2000], "at": int(time.time())}))

    async def failure(self, meeting_id: str) -> str | None:
        if not valid_name(meeting_id):
            return None
        return failure_reason(self._folder(meeting_id, "") / "failed.json")

    async def read(self, meeting_id: str, name: str, start: int,
                   end: int) -> AsyncIterator[bytes]:
        path = self.local_path(meeting_id, name)
        if path is None:
            return
        with path.open("rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def failure_reason(path: Path) -> str | None:
    """The reason in a ``failed.json`` file, or None when there is none."""
    try:
        data = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    return str(data.get("reason") or "failed") if isinstance(data, dict) else "failed"


def age_s(pending: PendingFile) -> float:
    """Seconds since a pending file last grew."""
    return max(0.0, time.time() - pending.modified)


def open_storage(directory: str | os.PathLike[str], s3: S3Config | None = None,
                 **s3_options: float) -> RecordingStorage:
    """The storage a deployment uses: ``directory`` itself, or with ``s3`` the bucket, with
    ``directory`` as the local spool (:class:`~signaling.recording_s3.S3Storage`)."""
    if s3 is None:
        return DirectoryStorage(directory)
    from .recording_s3 import S3Storage

    return S3Storage(s3, directory, **s3_options)
