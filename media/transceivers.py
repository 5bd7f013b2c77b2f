"""Our side of one connection's media lines: directions and the tracks we send on them.

:func:`media.plan.plan_media` says who sends what by role; :class:`Transceivers` applies that
plan to aiortc's transceivers -- adding the lines of our own offer, setting direction and track
on the lines a remote offer created, and giving video its first track when it is turned on --
and stops the tracks it handed to aiortc when the connection is replaced or closed.
"""

from __future__ import annotations

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from .local import LocalMedia
from .plan import MediaPlan, direction, receives, sends


class Transceivers:
    """The transceivers this client configured on one connection to one remote peer."""

    def __init__(self, local: LocalMedia, plan: MediaPlan) -> None:
        self._local = local
        self._plan = plan
        # Lines already given a direction (ours, or answered): a later remote offer may add
        # more, and only those are configured then (see configure_answer).
        self._configured: set[int] = set()
        # One sending line per kind: a renegotiation that adds a second video line (a browser's
        # screen share) is received, not answered with a second copy of our video.
        self._send_kinds: set[str] = set()
        self._tracks: list[MediaStreamTrack] = []

    def add_for_offer(self, pc: RTCPeerConnection) -> None:
        """Add every line this client may ever use, before its initial offer: aiortc cannot
        roll back, so this client never starts a renegotiation later."""
        audio = self._local.audio_track() if sends(self._plan.audio) else None
        transceiver = pc.addTransceiver(audio or "audio", direction=self._plan.audio)
        self._configured.add(id(transceiver))
        if audio is not None:
            self._tracks.append(audio)
        if sends(self._plan.audio):
            self._send_kinds.add("audio")
        if self._plan.video is not None:
            video = self._local.video_track() if sends(self._plan.video) else None
            transceiver = pc.addTransceiver(video or "video", direction=self._plan.video)
            self._configured.add(id(transceiver))
            if video is not None:
                self._tracks.append(video)
            if sends(self._plan.video):
                self._send_kinds.add("video")

    def configure_answer(self, pc: RTCPeerConnection) -> None:
        """Directions and tracks for transceivers the remote offer created."""
        for transceiver in pc.getTransceivers():
            if id(transceiver) in self._configured:
                continue
            self._configured.add(id(transceiver))
            kind = transceiver.kind
            wanted = self._plan.audio if kind == "audio" else self._plan.video
            send = sends(wanted) and kind not in self._send_kinds
            transceiver.direction = direction(send, receives(wanted))
            if not send:
                continue
            self._send_kinds.add(kind)
            track = self._local.audio_track() if kind == "audio" else self._local.video_track()
            if track is not None:
                transceiver.sender.replaceTrack(track)
                self._tracks.append(track)

    def apply_media(self, pc: RTCPeerConnection) -> None:
        """After :meth:`LocalMedia.set_enabled`: give video senders a track if video was
        turned on for the first time (no renegotiation: the line is already ``sendrecv``)."""
        if not self._local.video_enabled:
            return
        for transceiver in pc.getTransceivers():
            if (transceiver.kind == "video" and sends(transceiver.direction)
                    and transceiver.sender.track is None):
                track = self._local.video_track()
                if track is not None:
                    transceiver.sender.replaceTrack(track)
                    self._tracks.append(track)
                break

    def stop(self) -> None:
        """Stop every track handed to aiortc and forget the lines (the connection they were
        configured on is being replaced or closed)."""
        self._configured.clear()
        self._send_kinds.clear()
        for track in self._tracks:
            track.stop()
        self._tracks.clear()
