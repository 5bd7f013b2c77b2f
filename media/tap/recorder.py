"""The recorder: the server peer's second consumer of participants' audio, beside
transcription. One :class:`Recorder` per room; one file per participant track: Ogg/Opus for
audio, WebM/VP8 for video (rooms that record video).

It is fed encoded frames (:func:`media.receive.tee_encoded`, through
``PeerClient(on_encoded_audio=..., on_encoded_video=...)``) on the event loop, writes them with
an :class:`~media.tap.track_writer.OpusTrackWriter` or a
:class:`~media.tap.video_writer.VP8TrackWriter` into a path its
:class:`~signaling.recording_storage.RecordingStorage` gives it, and commits each file with its
metadata when the participant leaves (:meth:`Recorder.close_peer`) or the recorder stops
(:meth:`Recorder.aclose`: the room ended, or the server peer leaves).

File names are ``<peerId>.<track>.<part>.ogg`` (``.webm`` for video): ``track`` counts the
participant's tracks as this server peer received them, ``part`` is random per :class:`Recorder`, so a recorder that
replaces a dead one (failover) never writes over the files its predecessor left.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import av

from media.receive import EncodedFrame
from signaling.recording_storage import RecordingStorage, StoredFile, TrackMeta

from .track_writer import MIME_TYPE, OpusTrackWriter
from .video_writer import MIME_TYPE as VIDEO_MIME_TYPE
from .video_writer import VP8TrackWriter

logger = logging.getLogger(__name__)

#: What writing a file through PyAV can raise (a full disk, a closed file).
_WRITE_ERRORS = (OSError, av.FFmpegError, ValueError)

#: Track files one room keeps open at most (4 participants, a few renegotiations each); frames
#: of further tracks are dropped (and logged once), so file handles stay bounded.
MAX_OPEN_TRACKS = 32

TrackWriter = OpusTrackWriter | VP8TrackWriter
#: What is recorded, by codec MIME type (lower case): the file suffix and its MIME type.
_FORMATS = {"audio/opus": ("ogg", MIME_TYPE), "video/vp8": ("webm", VIDEO_MIME_TYPE)}


class Recorder:
    """Records one room's participant tracks. ``user_of(peer_id)`` names a participant's
    user (for the metadata), ``name_of(peer_id)`` their display name (written into video
    files: the composite shows it). :meth:`aclose` is idempotent."""

    def __init__(self, storage: RecordingStorage, *, meeting_id: str, started_at_ms: int,
                 user_of: Callable[[str], str], log_prefix: str = "",
                 name_of: Callable[[str], str] | None = None) -> None:
        self.storage = storage
        self.meeting_id = meeting_id
        self.started_at_ms = started_at_ms
        self.part = secrets.token_hex(3)
        self._user_of = user_of
        self._name_of = name_of
        self._log = log_prefix
        # track -> (peer, user, file name, writer). The user is looked up when the track
        # starts: by the time the participant has left, the room no longer names them.
        self._writers: dict[str, tuple[str, str, str, TrackWriter]] = {}
        self._refused: set[str] = set()
        self._closed = False
        #: Files committed by this recorder, in order.
        self.committed: list[StoredFile] = []

    @property
    def open_tracks(self) -> dict[str, TrackWriter]:
        """Writers of the tracks being recorded, by track id (a copy)."""
        return {track: entry[3] for track, entry in self._writers.items()}

    def on_encoded(self, peer_id: str, frame: EncodedFrame) -> None:
        """One encoded frame of ``peer_id``'s track ``frame.track`` (on the event loop)."""
        if self._closed:
            return
        entry = self._writers.get(frame.track)
        if entry is None:
            if frame.track in self._refused:
                return
            form = _FORMATS.get(frame.codec.lower())
            if form is None or len(self._writers) >= MAX_OPEN_TRACKS:
                self._refused.add(frame.track)
                logger.warning("%s peer=%s track %s (%s) not recorded", self._log, peer_id,
                               frame.track, frame.codec or "unknown codec")
                return
            suffix, mime_type = form
            name = f"{frame.track}.{self.part}.{suffix}"
            path = self.storage.begin(self.meeting_id, name)
            label = f"{self._log} peer={peer_id} track={frame.track}"
            writer: TrackWriter = OpusTrackWriter(
                path, started_at_ms=self.started_at_ms, name=label) if suffix == "ogg" \
                else VP8TrackWriter(path, started_at_ms=self.started_at_ms, name=label,
                                    title=self._name_of(peer_id) if self._name_of else "")
            user_id = self._user_of(peer_id)
            entry = self._writers[frame.track] = (peer_id, user_id, name, writer)
            try:  # whose file this is, should this recorder die before committing it
                self.storage.note(self.meeting_id, name, TrackMeta(
                    peer_id=peer_id, user_id=user_id, mime_type=mime_type, start_ms=0,
                    duration_ms=0, packets=0))
            except OSError as exc:
                logger.warning("%s track %s: note not written (%r)", self._log, frame.track,
                               exc)
        try:
            entry[3].push(frame)
        except _WRITE_ERRORS as exc:  # this track stops; the others go on
            logger.error("%s track %s: write failed (%r); track closed", self._log,
                         frame.track, exc)
            self._finish(frame.track)

    def close_peer(self, peer_id: str) -> None:
        """``peer_id`` left: finish and commit its tracks."""
        for track, entry in list(self._writers.items()):
            if entry[0] == peer_id:
                self._finish(track)

    def _finish(self, track: str) -> None:
        peer_id, user_id, name, writer = self._writers.pop(track)
        self._refused.add(track)  # a frame after this (the track's last) is not a new file
        try:
            summary = writer.close()
        except _WRITE_ERRORS as exc:
            logger.error("%s track %s: close failed (%r)", self._log, track, exc)
            summary = writer.summary()
        try:
            if summary.packets == 0:
                self.storage.discard(self.meeting_id, name)
                return
            mime_type = VIDEO_MIME_TYPE if isinstance(writer, VP8TrackWriter) else MIME_TYPE
            stored = self.storage.commit(self.meeting_id, name, TrackMeta(
                peer_id=peer_id, user_id=user_id or self._user_of(peer_id), mime_type=mime_type,
                start_ms=summary.start_ms, duration_ms=summary.duration_ms,
                packets=summary.packets))
        except OSError as exc:  # left in incomplete/: getRecording reports it
            logger.error("%s track %s: commit failed (%r)", self._log, track, exc)
            return
        self.committed.append(stored)
        logger.info("%s peer=%s track %s saved: %s, %.1f s from %.1f s, %d bytes", self._log,
                    peer_id, track, name, summary.duration_ms / 1000, summary.start_ms / 1000,
                    stored.size)

    async def aclose(self) -> None:
        """Finish and commit every open track (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for track in list(self._writers):
            self._finish(track)

