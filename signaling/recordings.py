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

import hashlib
import hmac
import logging
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .recording_storage import RecordingStorage, age_s, valid_name
from .store import OPEN_STATES, Meeting

logger = logging.getLogger(__name__)

RecordingState = str  # "recording" | "processing" | "ready" | "failed"
_LABEL = b"connvo-rtc recording url v1"


class Recordings:
    """Lists a meeting's recording and serves its files. ``secrets``: the auth secrets."""

    def __init__(self, storage: RecordingStorage, *, secrets: tuple[str, ...],
                 url_ttl_s: int, stale_after_s: float) -> None:
        self.storage = storage
        self.url_ttl_s = url_ttl_s
        self.stale_after_s = stale_after_s
        self._keys = [hmac.new(s.encode(), _LABEL, hashlib.sha256).digest() for s in secrets]

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

    def describe(self, meeting: Meeting, base_url: str) -> dict[str, Any]:
        """``getRecording``'s value for ``meeting`` (the caller's role is checked by then)."""
        meeting_id = meeting.meeting_id
        files = self.storage.files(meeting_id)
        pending = self.storage.pending(meeting_id)
        state: RecordingState
        if meeting.state in OPEN_STATES:
            state = "recording"
        elif any(age_s(p) >= self.stale_after_s for p in pending):
            state = "failed"
        elif pending:
            state = "processing"
        else:
            state = "ready"
        return {"meetingId": meeting_id, "state": state, "files": [
            {"kind": "track", "peerId": f.meta.peer_id, "userId": f.meta.user_id,
             "mimeType": f.meta.mime_type, "startMs": f.meta.start_ms,
             "durationMs": f.meta.duration_ms, "bytes": f.size,
             "url": base_url.rstrip("/") + self.signed_path(meeting_id, f.name)}
            for f in files]}

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
            "Content-Type": "audio/ogg", "Cache-Control": "private, max-age=60",
            "Content-Disposition": f'attachment; filename="{name}"'})
        return response
