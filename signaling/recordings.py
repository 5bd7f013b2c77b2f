"""Recordings through the hub: ``recordings/getRecording`` and signed, expiring downloads.

What a meeting's recording is comes from its storage (:mod:`signaling.recording_storage`) and
the meeting's state:

- ``recording``: the meeting is open (files already committed are listed: participants who
  left);
- ``processing``: the meeting is over and a file is still being finished;
- ``ready``: over, and every file begun was committed;
- ``failed``: over, and a file was left unfinished for ``recording.stale_after_s`` (its
  recorder died and nobody completed it).

A file's ``url`` is ``/recordings/<meetingId>/<name>?expires=<unix s>&sig=<hex>`` on the hub:
HMAC-SHA256 over ``<meetingId>/<name>:<expires>`` with a key derived from each auth secret
(the first signs, all verify: rotation). It works without a bearer token (a browser's
``<audio src>``, a ``curl``) until it expires; range requests are served (aiohttp's
``FileResponse``: 206 with ``Content-Range``). A bad, expired or tampered URL is 403; a valid
URL for a file that is gone is 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from aiohttp import web

from .recording_storage import RecordingStorage, TrackMeta, age_s, valid_name
from .store import OPEN_STATES, Meeting, Room, Store
from .tasks import TaskSet
from .webhooks import NO_WEBHOOKS, Webhooks

logger = logging.getLogger(__name__)

RecordingState = str  # "recording" | "processing" | "ready" | "failed"
_LABEL = b"connvo-rtc recording url v1"
MIX_NAME = "mix.ogg"
MIX_MIME = "audio/ogg; codecs=opus"
COMPOSITE_NAME = "composite.webm"
COMPOSITE_MIME = "video/webm; codecs=vp8,opus"
#: Made after the meeting, not by a recorder: never a dead recorder's file to salvage.
_AFTER = (MIX_NAME, COMPOSITE_NAME)
_POLL_S = 0.5


class Recordings:
    """Lists a meeting's recording and serves its files. ``secrets``: the auth secrets."""

    def __init__(self, storage: RecordingStorage, *, secrets: tuple[str, ...],
                 url_ttl_s: int, stale_after_s: float, store: Store | None = None,
                 webhooks: Webhooks = NO_WEBHOOKS, mix_cpu_s: int = 600) -> None:
        self.storage = storage
        self.url_ttl_s = url_ttl_s
        self.stale_after_s = stale_after_s
        self.store = store
        self.webhooks = webhooks
        self.mix_cpu_s = mix_cpu_s
        self._keys = [hmac.new(s.encode(), _LABEL, hashlib.sha256).digest() for s in secrets]
        self._tasks = TaskSet("recordings", logger=logger)
        self._mixing: set[str] = set()
        self._failed: set[str] = set()  # meetings whose mix failed (this worker's knowledge)

    async def aclose(self) -> None:
        """Stop mixing (a mix cut short leaves its recording ``processing``)."""
        await self._tasks.aclose()

    # ------------------------------------------------------------------ after the meeting

    async def room_ended(self, room: Room) -> None:
        """A room ended: a recorded one gets its mix (in the background)."""
        if room.features.recording and room.meeting_id not in self._mixing:
            self._mixing.add(room.meeting_id)
            self._tasks.spawn(self._finish(room), f"mix {room.meeting_id}")

    async def _finish(self, room: Room) -> None:
        meeting_id = room.meeting_id
        log = f"meeting={meeting_id} room={room.room_id}"
        try:
            # The server peer commits its tracks as it leaves the ended room.
            while any(age_s(p) < self.stale_after_s for p in self.storage.pending(meeting_id)):
                await asyncio.sleep(_POLL_S)
            meeting = await self.store.get_meeting(meeting_id) if self.store else None
            started = (meeting.started_at if meeting else None) or room.created_at
            ended = room.ended_at or int(time.time() * 1000)
            duration_ms = max(0, ended - started)
            tracks = [f for f in self.storage.files(meeting_id) if f.meta.kind == "track"]
            found: list[tuple[Path, TrackMeta | None]] = [(p, f.meta) for f in tracks
                     if (p := self.storage.local_path(meeting_id, f.name)) is not None]
            # Files a dead recorder left: mixed as far as they decode, then kept (salvaged).
            left = {str(path): (p.name, note) for p in self.storage.pending(meeting_id)
                    if p.name not in _AFTER
                    for path, note in [self.storage.abandoned(meeting_id, p.name)]}
            found += [(Path(path), note) for path, (_, note) in left.items()]
            audio = [str(path) for path, meta in found if not _is_video(path, meta)]
            video = [("--video", meta.user_id if meta else "", str(path))
                     for path, meta in found if _is_video(path, meta)]
            paths = audio
            out = self.storage.begin(meeting_id, MIX_NAME)
            composite = self.storage.begin(meeting_id, COMPOSITE_NAME) if video else None
            # The composite decodes and encodes video: ~0.1 CPU s per second of a meeting with
            # four busy tiles (bench/recorder.py), so its limit grows with the length.
            cpu_s = self.mix_cpu_s + (duration_ms // 1000 * 2 if video else 0)
            started_mix = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "media.tap.mixdown", "--out", str(out),
                "--duration-ms", str(duration_ms), "--cpu-seconds", str(cpu_s),
                *(["--composite", str(composite)] if composite else []),
                *(arg for entry in video for arg in entry),
                *audio, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                output, err = await proc.communicate()
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            if proc.returncode != 0:
                self._failed.add(meeting_id)
                self.storage.discard(meeting_id, MIX_NAME)
                self.storage.discard(meeting_id, COMPOSITE_NAME)
                logger.error("%s mix failed (exit %s): %s", log, proc.returncode,
                             err.decode(errors="replace")[-500:])
                return
            self._salvage(meeting_id, log, left, output)
            if composite is not None:  # before the mix: the mix's presence means "ready"
                self.storage.commit(meeting_id, COMPOSITE_NAME, TrackMeta(
                    kind="composite", peer_id="", user_id="", mime_type=COMPOSITE_MIME,
                    start_ms=0, duration_ms=duration_ms, packets=0))
            stored = self.storage.commit(meeting_id, MIX_NAME, TrackMeta(
                kind="mix", peer_id="", user_id="", mime_type=MIX_MIME, start_ms=0,
                duration_ms=duration_ms, packets=0))
            logger.info("%s mix of %d track(s)%s ready: %.1f s, %d bytes, made in %.1f s", log,
                        len(paths), f" and composite of {len(video)}" if video else "",
                        duration_ms / 1000, stored.size, time.monotonic() - started_mix)
            await self.webhooks.emit("recording.ready", meeting_id, {
                "roomId": room.room_id, "durationMs": duration_ms, "tracks": len(tracks),
                "recordingPath": "/api/run/meetings/recordings/getRecording"})
        except asyncio.CancelledError:
            raise
        except Exception:
            self._failed.add(meeting_id)
            logger.exception("%s mix failed", log)
        finally:
            self._mixing.discard(meeting_id)

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

    def _salvage(self, meeting_id: str, log: str,
                 left: dict[str, tuple[str, TrackMeta | None]], output: bytes) -> None:
        """Commit the unfinished files of dead recorders with the extents the mix found."""
        for line in output.decode(errors="replace").splitlines():
            try:
                extent = json.loads(line)
                name, note = left[extent["path"]]
                start_ms, duration_ms = int(extent["startMs"]), int(extent["durationMs"])
            except (ValueError, KeyError, TypeError):
                continue  # a committed track's line, or not ours
            if note is None or duration_ms <= 0:
                logger.error("%s %s could not be salvaged (%s)", log, name,
                             extent.get("error") or "no note of whose it is")
                continue  # stays pending: the recording is failed
            stored = self.storage.commit(meeting_id, name, msgspec.structs.replace(
                note, start_ms=start_ms, duration_ms=duration_ms))
            logger.warning("%s %s salvaged (its recorder died): %.1f s from %.1f s, %d bytes",
                           log, name, duration_ms / 1000, start_ms / 1000, stored.size)

    # ------------------------------------------------------------------ the API's answer

    def describe(self, meeting: Meeting, base_url: str) -> dict[str, Any]:
        """``getRecording``'s value for ``meeting`` (the caller's role is checked by then)."""
        meeting_id = meeting.meeting_id
        files = self.storage.files(meeting_id)
        pending = [p for p in self.storage.pending(meeting_id) if p.name not in _AFTER]
        state: RecordingState
        if meeting.state in OPEN_STATES:
            state = "recording"
        elif meeting_id in self._failed:
            state = "failed"
        elif meeting_id in self._mixing:
            state = "processing"
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
        path = self.storage.local_path(meeting_id, name)
        if path is None:
            raise web.HTTPNotFound(text="no such recording file\n")
        logger.info("meeting=%s download %s (%s)", meeting_id, name,
                    request.headers.get("Range", "whole"))
        response = web.FileResponse(path, headers={
            "Content-Type": "video/webm" if name.endswith(".webm") else "audio/ogg",
            "Cache-Control": "private, max-age=60",
            "Content-Disposition": f'attachment; filename="{name}"'})
        return response


def _is_video(path: Path, meta: TrackMeta | None) -> bool:
    """Whether a track file is video (by its metadata, else its name)."""
    return meta.mime_type.startswith("video/") if meta else path.suffix == ".webm"
