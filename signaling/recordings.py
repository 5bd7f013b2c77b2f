"""Recordings through the hub: ``recordings/getRecording`` and signed, expiring downloads.

What a meeting's recording is comes from its storage (:mod:`signaling.recording_storage`) and
the meeting's state:

- ``recording``: the meeting is open (files already committed are listed: participants who
  left);
- ``processing``: the meeting is over and a file is still being finished, or the mix (a
  durable job any hub worker does: :mod:`signaling.mixer`) is not stored yet;
- ``ready``: over, every file begun was stored, and the mix is there;
- ``failed``: over, and the mix failed (recorded in the storage, so every worker says so), or
  a file was left unfinished for ``recording.stale_after_s`` and could not be salvaged.

A file's ``url`` is ``/recordings/<meetingId>/<name>?expires=<unix s>&sig=<hex>`` on the hub:
HMAC-SHA256 over ``<meetingId>/<name>:<expires>`` with a key derived from each auth secret
(the first signs, all verify: rotation). It works without a bearer token (a browser's
``<audio src>``, a ``curl``) until it expires; range requests are served: from a directory by
aiohttp's ``FileResponse``, from S3 as a GetObject with that ``Range`` streamed through (206
with ``Content-Range``, 416 past the end). A bad, expired or tampered URL is 403; a valid URL
for a file that is gone is 404; storage that cannot be reached is 503.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .errors import HubError, Unavailable
from .mixer import AFTER_MEETING
from .mixjobs import MemoryMixJobs, MixJob, MixJobs
from .recording_storage import RecordingStorage, age_s, valid_name
from .s3 import S3Error
from .store import OPEN_STATES, Meeting, Room, Store

logger = logging.getLogger(__name__)

RecordingState = str  # "recording" | "processing" | "ready" | "failed"
_LABEL = b"connvo-rtc recording url v1"


class Recordings:
    """Lists a meeting's recording, serves its files and queues its mix. ``secrets``: the auth
    secrets; ``mix_jobs``: where a room that ended queues its mix (:mod:`signaling.mixer` does
    it)."""

    def __init__(self, storage: RecordingStorage, *, secrets: tuple[str, ...],
                 url_ttl_s: int, stale_after_s: float, store: Store | None = None,
                 mix_jobs: MixJobs | None = None) -> None:
        self.storage = storage
        self.url_ttl_s = url_ttl_s
        self.stale_after_s = stale_after_s
        self.store = store
        self.mix_jobs: MixJobs = mix_jobs if mix_jobs is not None else MemoryMixJobs()
        self._keys = [hmac.new(s.encode(), _LABEL, hashlib.sha256).digest() for s in secrets]

    # ------------------------------------------------------------------ after the meeting

    async def room_ended(self, room: Room) -> None:
        """A room ended: a recorded one gets its mix job (any hub worker does it)."""
        if not room.features.recording:
            return
        log = f"meeting={room.meeting_id} room={room.room_id}"
        try:
            meeting = await self.store.get_meeting(room.meeting_id) if self.store else None
            started = (meeting.started_at if meeting else None) or room.created_at
            job = MixJob(job_id="mix_" + secrets.token_hex(6), meeting_id=room.meeting_id,
                         room_id=room.room_id, started_at_ms=started,
                         ended_at_ms=room.ended_at or int(time.time() * 1000))
            if await self.mix_jobs.enqueue(job):
                logger.info("%s mix job %s queued", log, job.job_id)
        except HubError as exc:  # the store is down: the room still ends
            logger.error("%s mix job not queued (%s): the recording stays processing", log,
                         exc)

    # ------------------------------------------------------------------ signing

    def _sig(self, key: bytes, meeting_id: str, name: str, expires: int) -> str:
        return hmac.new(key, f"{meeting_id}/{name}:{expires}".encode(),
                        hashlib.sha256).hexdigest()

    def signed_path(self, meeting_id: str, name: str, *, now: float | None = None) -> str:
        """The download path of a file, valid for ``url_ttl_s``."""
        expires = int(now if now is not None else time.time()) + self.url_ttl_s
        sig = self._sig(self._keys[0], meeting_id, name, expires)
        return f"/recordings/{quote(meeting_id)}/{quote(name)}?expires={expires}&sig={sig}"

    def verify(self, meeting_id: str, name: str, expires: str, sig: str) -> bool:
        """Whether a download URL's signature holds and has not expired."""
        if not expires.isdigit() or len(expires) > 12 or len(sig) != 64:
            return False
        if int(expires) < time.time():
            return False
        return any(hmac.compare_digest(self._sig(key, meeting_id, name, int(expires)), sig)
                   for key in self._keys)

    # ------------------------------------------------------------------ the API's answer

    async def describe(self, meeting: Meeting, base_url: str) -> dict[str, Any]:
        """``getRecording``'s value for ``meeting`` (the caller's role is checked by then)."""
        meeting_id = meeting.meeting_id
        try:
            files = await self.storage.list_files(meeting_id)
            pending = [p for p in await self.storage.list_pending(meeting_id)
                       if p.name not in AFTER_MEETING]
            failure = None if meeting.state in OPEN_STATES else \
                await self.storage.failure(meeting_id)
        except (S3Error, OSError) as exc:
            logger.warning("meeting=%s recording storage unreachable: %s", meeting_id, exc)
            raise Unavailable("recording storage unreachable") from None
        state: RecordingState
        if meeting.state in OPEN_STATES:
            state = "recording"
        elif failure is not None:
            state = "failed"
        elif any(age_s(p) >= self.stale_after_s for p in pending) and \
                any(f.meta.kind == "mix" for f in files):
            state = "failed"  # the mix is made and a file could not be salvaged
        elif pending or not any(f.meta.kind == "mix" for f in files):
            state = "processing"
        else:
            state = "ready"
        described = []
        order = {"mix": 0, "composite": 1}
        for f in sorted(files, key=lambda f: (order.get(f.meta.kind, 2), f.meta.start_ms,
                                               f.name)):
            entry: dict[str, Any] = {"kind": f.meta.kind}
            if f.meta.kind == "track":
                entry |= {"peerId": f.meta.peer_id, "userId": f.meta.user_id}
            described.append(entry | {
                "mimeType": f.meta.mime_type, "startMs": f.meta.start_ms,
                "durationMs": f.meta.duration_ms, "bytes": f.size,
                "url": base_url.rstrip("/") + self.signed_path(meeting_id, f.name)})
        return {"meetingId": meeting_id, "state": state, "files": described}

    # ------------------------------------------------------------------ downloads

    async def download(self, request: web.Request) -> web.StreamResponse:
        """``GET /recordings/{meetingId}/{name}?expires=&sig=`` (Range supported)."""
        meeting_id = request.match_info.get("meeting_id", "")
        name = request.match_info.get("name", "")
        expires = request.query.get("expires", "")
        sig = request.query.get("sig", "")
        if not (valid_name(meeting_id) and valid_name(name)) \
                or not self.verify(meeting_id, name, expires, sig):
            raise web.HTTPForbidden(text="bad or expired recording link\n")
        headers = {"Content-Type": "video/webm" if name.endswith(".webm") else "audio/ogg",
                   "Cache-Control": "private, max-age=60",
                   "Content-Disposition": f'attachment; filename="{name}"'}
        path = self.storage.local_path(meeting_id, name)
        if path is not None:
            logger.info("meeting=%s download %s (%s)", meeting_id, name,
                        request.headers.get("Range", "whole"))
            return web.FileResponse(path, headers=headers)
        return await self._stream(request, meeting_id, name, headers)

    async def _stream(self, request: web.Request, meeting_id: str, name: str,
                      headers: dict[str, str]) -> web.StreamResponse:
        """A download from remote storage: the Range (one, as aiohttp's ``FileResponse``
        reads it) becomes a ranged read (S3: GetObject with ``Range``); 206 / 416 as a file
        would answer."""
        try:
            stat = await self.storage.stat(meeting_id, name)
        except (S3Error, OSError) as exc:
            logger.warning("meeting=%s download %s: storage unreachable: %s", meeting_id, name,
                           exc)
            raise web.HTTPServiceUnavailable(text="recording storage unreachable\n") from None
        if stat is None:
            raise web.HTTPNotFound(text="no such recording file\n")
        size = stat.size
        headers = headers | {"Content-Type": stat.meta.mime_type.split(";")[0].strip()
                             or "application/octet-stream", "Accept-Ranges": "bytes"}
        start, stop, status = 0, size, 200
        if "Range" in request.headers:
            try:
                wanted = request.http_range
            except ValueError:
                wanted = None
            if wanted is not None and (wanted.start is not None or wanted.stop is not None):
                start, stop = wanted.start or 0, wanted.stop
                if start < 0 and stop is None:  # bytes=-N: the last N
                    start = max(0, size + start)
                stop = min(stop if stop is not None else size, size)
                status = 206
            if wanted is None or start >= size or stop <= start:
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{size}"},
                    text="range not satisfiable\n")
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        logger.info("meeting=%s download %s (%s) from remote storage", meeting_id, name,
                    request.headers.get("Range", "whole"))
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = stop - start
        await response.prepare(request)
        if request.method == "HEAD" or stop <= start:
            return response
        try:
            async for chunk in self.storage.read(meeting_id, name, start, stop - 1):
                await response.write(chunk)
        except (S3Error, OSError) as exc:  # headers are sent: the client sees a short body
            logger.warning("meeting=%s download %s cut: %s", meeting_id, name, exc)
            return response
        await response.write_eof()
        return response

