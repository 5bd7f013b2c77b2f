"""Recordings in S3-compatible object storage (``[recording] storage = "s3"``).

The recorder writes to a local **spool** (``recording.dir``) exactly as it writes to a
directory; what reaches the bucket goes through a small uploader owned by this object:

- :meth:`S3Storage.note` puts ``incomplete/<name>.json`` (whose the file is), and puts it again
  every ``heartbeat_s`` while the file grows (as a directory's mtime) or waits to be uploaded:
  every hub sees the file as pending, and when it last was alive (a dead or hung writer's note
  goes stale);
- :meth:`S3Storage.commit` writes the metadata beside the spool file (``<name>.meta.json``: the
  commit is durable on disk at once) and queues the upload: the file (one PutObject, or a
  multipart upload above ``part_bytes``), then its sidecar ``tracks/<name>.json``, then the note
  is deleted. A failed upload is retried with backoff (1 s doubling to 60 s) for as long as it
  takes; the spool file is deleted only once uploaded.
- Shutdown (:meth:`S3Storage.aclose`) gives the queued uploads ``flush_s`` to finish; what is
  left stays in the spool, and the next storage started on this machine with the same spool
  takes it over (below).

Layout in the bucket, under ``prefix``::

    <meetingId>/incomplete/<name>.json   note of a file being written (heartbeat)
    <meetingId>/incomplete/<name>        data of a file whose writer died (uploaded from the spool)
    <meetingId>/tracks/<name>            committed file (Content-Type: its MIME type)
    <meetingId>/tracks/<name>.json       its TrackMeta; written after the file: listed = complete
    <meetingId>/failed.json              the mix failed: {"reason", "at"}

**Spool and dead writers.** Each storage object owns ``<spool>/<owner>/`` and holds an
``flock`` on its ``.lock`` for its life. Every ``sweep_s`` a storage looks for owner folders whose
lock it can take (their process died: a ``kill -9`` of a tap child, a crash) and adopts their
files: committed ones are uploaded as such; unfinished ones (their writer died mid-meeting) are
uploaded to ``incomplete/<name>`` beside their note, where the hub's mix salvages them (as it
does a dead recorder's file in a directory). A writer on a machine that is lost loses what it
had not uploaded; its note stays and the recording ends ``failed``, as with a lost disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import msgspec

from .recording_storage import (
    PendingFile,
    StoredFile,
    TrackMeta,
    valid_name,
)
from .s3 import S3Client, S3Config, S3Error
from .tasks import TaskSet

logger = logging.getLogger(__name__)

_NOTE = ".note.json"
_META = ".meta.json"
_SIDECAR_CACHE = 4096

Work = Literal["note", "commit", "salvage", "discard"]


@dataclass
class _Entry:
    """A spool file this storage is responsible for."""

    meeting_id: str
    name: str
    path: Path
    work: Work
    note_at: float = 0.0  # monotonic time the note was last put
    tries: int = 0
    due: float = 0.0  # monotonic time of the next try
    note_due: float = 0.0  # monotonic time the next heartbeat may be tried
    grown_at: float = 0.0  # the spool file's mtime at the last heartbeat


class S3Storage:
    """Recording files in an S3 bucket, written through a local spool. Safe to create
    without a running loop; its background task starts on first use (or :meth:`start`).
    :meth:`aclose` is idempotent."""

    def __init__(self, config: S3Config, spool: str | os.PathLike[str], *,
                 heartbeat_s: float = 15.0, sweep_s: float = 30.0, flush_s: float = 10.0,
                 retry_max_s: float = 60.0) -> None:
        self.config = config
        self.client = S3Client(config)
        self.spool = Path(spool)
        self.heartbeat_s = heartbeat_s
        self.sweep_s = sweep_s
        self.flush_s = flush_s
        self.retry_max_s = retry_max_s
        self._prefix = config.prefix.strip("/") + "/" if config.prefix.strip("/") else ""
        self._owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock: IO[bytes] | None = None
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._sidecars: dict[tuple[str, float, int], TrackMeta] = {}
        self._wake = asyncio.Event()
        self._tasks = TaskSet("s3 storage", logger=logger)
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        #: Uploads done / retried, notes put / not put again (the file did not grow), since
        #: start (for tests and logs).
        self.uploaded = 0
        self.retries = 0
        self.notes_put = 0
        self.heartbeats_skipped = 0

    # ------------------------------------------------------------------ keys and the spool

    def key(self, meeting_id: str, part: str, name: str) -> str:
        """The object key of ``name`` in ``part`` (``tracks``, ``incomplete``, or ``""``)."""
        if not valid_name(meeting_id) or not valid_name(name):
            raise ValueError(f"bad meeting id or name {meeting_id!r} {name!r}")
        return f"{self._prefix}{meeting_id}/{part + '/' if part else ''}{name}"

    @property
    def owner_dir(self) -> Path:
        """This storage's own spool folder (created, and locked, on first use)."""
        if self._lock is None:
            self.spool.mkdir(parents=True, exist_ok=True)
            # Locked before it gets its name: a sweeper never sees it unlocked.
            tmp = self.spool / f".{self._owner}.tmp"
            tmp.mkdir()
            lock = (tmp / ".lock").open("wb")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.rename(self.spool / self._owner)
            self._lock = lock
        return self.spool / self._owner

    def _path(self, meeting_id: str, name: str) -> Path:
        if not valid_name(meeting_id) or not valid_name(name):
            raise ValueError(f"bad meeting id or name {meeting_id!r} {name!r}")
        return self.owner_dir / meeting_id / name

    # ------------------------------------------------------------------ the writer's side

    def begin(self, meeting_id: str, name: str) -> Path:
        path = self._path(meeting_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ensure_running()
        return path

    def note(self, meeting_id: str, name: str, meta: TrackMeta) -> None:
        path = self.begin(meeting_id, name)
        path.with_name(name + _NOTE).write_bytes(msgspec.json.encode(meta))
        self._queue(_Entry(meeting_id, name, path, "note"))

    def commit(self, meeting_id: str, name: str, meta: TrackMeta) -> StoredFile:
        path = self.begin(meeting_id, name)
        size = path.stat().st_size
        meta = msgspec.structs.replace(meta, bytes=size)
        tmp = path.with_name(name + _META + ".tmp")
        tmp.write_bytes(msgspec.json.encode(meta))
        os.replace(tmp, path.with_name(name + _META))
        self._queue(_Entry(meeting_id, name, path, "commit"))
        return StoredFile(name=name, meta=meta, size=size)

    def discard(self, meeting_id: str, name: str) -> None:
        path = self.begin(meeting_id, name)
        for p in (path, path.with_name(name + _NOTE), path.with_name(name + _META)):
            p.unlink(missing_ok=True)
        self._queue(_Entry(meeting_id, name, path, "discard"))

    def _queue(self, entry: _Entry) -> None:
        current = self._entries.get((entry.meeting_id, entry.name))
        if current is not None and entry.work == "note" and current.work != "note":
            return  # already committed or discarded: the note is handled with it
        if current is not None and entry.work != "note":
            entry.note_at, entry.grown_at = current.note_at, current.grown_at
        self._entries[(entry.meeting_id, entry.name)] = entry
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Files not uploaded yet (commits, salvages, deletions waiting)."""
        return sum(1 for e in self._entries.values() if e.work != "note")

    # ------------------------------------------------------------------ the uploader

    def _ensure_running(self) -> None:
        if self._runner is None and not self._closed:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop yet: started by start() or the next call on the loop
            self._runner = self._tasks.spawn(self._run(), "uploader")

    async def start(self) -> None:
        """Start the uploader (and the sweep for dead writers' spools) now."""
        _ = self.owner_dir
        self._ensure_running()

    async def _run(self) -> None:
        next_sweep = 0.0
        while True:
            if time.monotonic() >= next_sweep:
                for entry in await asyncio.to_thread(self._sweep):
                    self._entries[(entry.meeting_id, entry.name)] = entry
                next_sweep = time.monotonic() + self.sweep_s
            for entry in list(self._entries.values()):
                now = time.monotonic()
                # Open files (and commits whose upload is being retried) keep their note fresh.
                if (entry.work == "note" or (entry.work == "commit" and entry.tries)) \
                        and now - entry.note_at >= self.heartbeat_s and entry.note_due <= now:
                    await self._heartbeat(entry)
                if entry.work != "note" and entry.due <= now:
                    await self._step(entry)
            self._wake.clear()
            now = time.monotonic()
            waits = [next_sweep - now, self.heartbeat_s / 3]
            waits += [e.due - now for e in self._entries.values() if e.work != "note"]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.05, min(waits)))

    async def _heartbeat(self, entry: _Entry) -> None:
        if entry.work == "note" and entry.note_at:
            # As a directory's mtime: an open file is alive while it grows. A writer that
            # stopped writing (hung, or leaked the file) goes stale like a dead one.
            try:
                grown = entry.path.stat().st_mtime > entry.grown_at
            except OSError:
                grown = False
            if not grown:
                entry.note_at = time.monotonic()  # look again in heartbeat_s
                self.heartbeats_skipped += 1
                return
        try:
            with contextlib.suppress(OSError):
                entry.grown_at = entry.path.stat().st_mtime
            await self._put_note(entry)
        except (S3Error, OSError) as exc:
            entry.note_due = time.monotonic() + min(self.heartbeat_s, 5.0)
            logger.warning("meeting=%s note of %s not put: %s", entry.meeting_id, entry.name,
                           exc)

    async def _step(self, entry: _Entry) -> None:
        """One try of an entry's work; on failure it is retried after a backoff."""
        try:
            if entry.work == "commit":
                await self._upload_commit(entry)
            elif entry.work == "salvage":
                await self._upload_salvage(entry)
            else:
                await self.client.delete(self.key(entry.meeting_id, "incomplete",
                                                  entry.name + ".json"))
        except asyncio.CancelledError:
            raise
        except (S3Error, OSError, ValueError, msgspec.DecodeError) as exc:
            entry.tries += 1
            self.retries += 1
            delay = min(self.retry_max_s, 2.0 ** (entry.tries - 1))
            entry.due = time.monotonic() + delay
            log = logger.error if entry.tries >= 5 else logger.warning
            log("meeting=%s %s of %s failed (try %d): %s; again in %.0f s (the spool keeps it)",
                entry.meeting_id, entry.work, entry.name, entry.tries, exc, delay)
            return
        if self._entries.get((entry.meeting_id, entry.name)) is entry:
            del self._entries[(entry.meeting_id, entry.name)]
        self.uploaded += entry.work != "discard"

    async def _put_note(self, entry: _Entry) -> None:
        note = entry.path.with_name(entry.name + _NOTE)
        try:
            data = await asyncio.to_thread(note.read_bytes)
        except FileNotFoundError:
            data = b"{}"
        entry.note_at = time.monotonic()
        await self.client.put_bytes(self.key(entry.meeting_id, "incomplete",
                                             entry.name + ".json"), data,
                                    content_type="application/json")
        self.notes_put += 1

    async def _upload_commit(self, entry: _Entry) -> None:
        meta_path = entry.path.with_name(entry.name + _META)
        meta = msgspec.json.decode(await asyncio.to_thread(meta_path.read_bytes), type=TrackMeta)
        await self._store(entry.meeting_id, entry.name, entry.path, meta)
        for p in (entry.path, meta_path, entry.path.with_name(entry.name + _NOTE)):
            p.unlink(missing_ok=True)

    async def _upload_salvage(self, entry: _Entry) -> None:
        note = entry.path.with_name(entry.name + _NOTE)
        if entry.path.exists():
            await self.client.put_file(self.key(entry.meeting_id, "incomplete", entry.name),
                                       entry.path)
        if note.exists():
            await self._put_note(entry)
        for p in (entry.path, note):
            p.unlink(missing_ok=True)
        logger.warning("meeting=%s %s: its writer died; its data was uploaded for salvage",
                       entry.meeting_id, entry.name)

    async def _store(self, meeting_id: str, name: str, source: Path, meta: TrackMeta) -> None:
        """The file, then its sidecar (a listed sidecar means a complete file), then the
        pending note and any salvage data are forgotten."""
        await self.client.put_file(self.key(meeting_id, "tracks", name), source,
                                   content_type=meta.mime_type)
        await self.client.put_bytes(self.key(meeting_id, "tracks", name + ".json"),
                                    msgspec.json.encode(meta), content_type="application/json")
        await self.client.delete(self.key(meeting_id, "incomplete", name + ".json"))
        await self.client.delete(self.key(meeting_id, "incomplete", name))

    def _sweep(self) -> list[_Entry]:
        """Adopt the spool folders of storages whose process died (their lock is free); in a
        thread: returns their files' work."""
        adopted: list[_Entry] = []
        if not self.spool.is_dir():
            return adopted
        for folder in self.spool.iterdir():
            if folder.name.startswith(".") or folder.name == self._owner \
                    or not folder.is_dir():
                continue
            try:
                with (folder / ".lock").open("ab") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    adopted += self._adopt(folder)
            except BlockingIOError:
                continue  # alive
            except OSError as exc:
                logger.warning("spool %s: not adopted (%r)", folder, exc)
        return adopted

    def _adopt(self, folder: Path) -> list[_Entry]:
        adopted: list[_Entry] = []
        for meeting in folder.iterdir():
            if not meeting.is_dir() or not valid_name(meeting.name):
                continue
            for path in meeting.iterdir():
                if path.name.endswith((_NOTE, _META, ".tmp")) or not valid_name(path.name):
                    continue
                committed = path.with_name(path.name + _META).exists()
                dest = self._path(meeting.name, path.name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                for suffix in ("", _NOTE, _META):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(path.with_name(path.name + suffix),
                                   dest.with_name(dest.name + suffix))
                adopted.append(_Entry(meeting.name, path.name, dest,
                                      "commit" if committed else "salvage"))
        for path in sorted(folder.rglob("*"), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
        if adopted:
            logger.warning("spool %s of a dead writer adopted: %d file(s) to upload",
                           folder.name, len(adopted))
        return adopted

    async def aclose(self) -> None:
        """Give queued uploads ``flush_s`` to finish, then stop; the rest stays in the spool
        for the next storage on this machine (idempotent)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self.flush_s
        for entry in self._entries.values():
            entry.due = 0.0  # one more try now, whatever the backoff said
        while self.backlog and self._runner is not None and not self._runner.done() \
                and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.05)
        if self.backlog:
            logger.warning("s3 storage closing with %d file(s) not uploaded: kept in %s",
                           self.backlog, self.owner_dir)
        await self._tasks.aclose()
        await self.client.aclose()
        if self._lock is not None:
            if not self._entries:  # nothing left to upload, no file open: the folder goes
                with contextlib.suppress(OSError):
                    for path in sorted(self.owner_dir.rglob("*"), reverse=True):
                        path.rmdir() if path.is_dir() else path.unlink()
                    self.owner_dir.rmdir()
            self._lock.close()  # releases the flock: a sweeper may adopt what is left

    # ------------------------------------------------------------------ the reader's side

    async def _listing(self, meeting_id: str, part: str) -> dict[str, tuple[int, float]]:
        if not valid_name(meeting_id):
            return {}
        base = f"{self._prefix}{meeting_id}/{part}/"
        return {o.key[len(base):]: (o.size, o.modified)
                for o in await self.client.list(base) if "/" not in o.key[len(base):]}

    async def list_files(self, meeting_id: str) -> list[StoredFile]:
        listed = await self._listing(meeting_id, "tracks")
        found: list[StoredFile] = []
        for name in sorted(listed):
            if not name.endswith(".json") or name[:-5] not in listed:
                continue
            media = name[:-5]
            meta = await self._sidecar(meeting_id, name, listed[name])
            if meta is not None:
                found.append(StoredFile(name=media, meta=meta, size=listed[media][0]))
        return found

    async def _sidecar(self, meeting_id: str, name: str,
                       stamp: tuple[int, float]) -> TrackMeta | None:
        key = self.key(meeting_id, "tracks", name)
        cached = self._sidecars.get((key, stamp[1], stamp[0]))
        if cached is not None:
            return cached
        data = await self.client.get_bytes(key)
        try:
            meta = msgspec.json.decode(data or b"", type=TrackMeta)
        except msgspec.DecodeError:
            return None
        if len(self._sidecars) >= _SIDECAR_CACHE:
            self._sidecars.clear()
        self._sidecars[(key, stamp[1], stamp[0])] = meta
        return meta

    async def list_pending(self, meeting_id: str) -> list[PendingFile]:
        listed = await self._listing(meeting_id, "incomplete")
        names: dict[str, float] = {}
        for name, (_, modified) in listed.items():
            base = name.removesuffix(".json")
            names[base] = max(names.get(base, 0.0), modified)
        return [PendingFile(name=n, modified=m) for n, m in sorted(names.items())]

    async def stat(self, meeting_id: str, name: str) -> StoredFile | None:
        if not valid_name(meeting_id) or not valid_name(name) or name.endswith(".json"):
            return None
        return next((f for f in await self.list_files(meeting_id) if f.name == name), None)

    async def fetch(self, meeting_id: str, name: str, folder: Path) -> Path | None:
        dest = folder / name
        if await self.client.download(self.key(meeting_id, "tracks", name), dest):
            return dest
        return None

    async def fetch_abandoned(self, meeting_id: str, name: str,
                              folder: Path) -> tuple[Path | None, TrackMeta | None]:
        dest = folder / name
        found = await self.client.download(self.key(meeting_id, "incomplete", name), dest)
        data = await self.client.get_bytes(self.key(meeting_id, "incomplete", name + ".json"))
        try:
            meta = msgspec.json.decode(data, type=TrackMeta) if data else None
        except msgspec.DecodeError:
            meta = None
        return (dest if found else None), meta

    async def put_file(self, meeting_id: str, name: str, source: Path,
                       meta: TrackMeta) -> StoredFile:
        size = (await asyncio.to_thread(source.stat)).st_size
        meta = msgspec.structs.replace(meta, bytes=size)
        delay = 1.0
        for attempt in range(1, 6):
            try:
                await self._store(meeting_id, name, source, meta)
                break
            except S3Error as exc:
                if attempt == 5 or not exc.retryable:
                    raise
                logger.warning("meeting=%s upload of %s failed (%s); again in %.0f s",
                               meeting_id, name, exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        await asyncio.to_thread(source.unlink, True)
        return StoredFile(name=name, meta=meta, size=size)

    async def mark_failed(self, meeting_id: str, reason: str) -> None:
        await self.client.put_bytes(self.key(meeting_id, "", "failed.json"), msgspec.json.encode(
            {"reason": reason[:2000], "at": int(time.time())}), content_type="application/json")

    async def failure(self, meeting_id: str) -> str | None:
        if not valid_name(meeting_id):
            return None
        data = await self.client.get_bytes(self.key(meeting_id, "", "failed.json"))
        if data is None:
            return None
        try:
            decoded = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return "failed"
        return str(decoded.get("reason") or "failed") if isinstance(decoded, dict) else "failed"

    def local_path(self, meeting_id: str, name: str) -> Path | None:
        return None  # downloads stream ranges from the bucket (read)

    async def read(self, meeting_id: str, name: str, start: int,
                   end: int) -> AsyncIterator[bytes]:
        async for chunk in self.client.stream(self.key(meeting_id, "tracks", name), start, end):
            yield chunk
