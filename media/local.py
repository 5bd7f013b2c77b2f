"""What this client sends: one audio source and optional video, turned on and off together."""

from __future__ import annotations

import weakref

from aiortc.mediastreams import MediaStreamTrack

from .sources import AudioSource, PatternVideoTrack


class LocalMedia:
    """What this client sends: tracks made per connection from one source, plus on/off flags.

    Flags follow the browser's ``track.enabled``: off sends silence or black frames, keeping
    RTP timestamps continuous and needing no renegotiation. Video can only be toggled when the
    client was configured to send it (``video_capable``): that is what puts a sending video line
    into the SDP.
    """

    def __init__(self, audio_source: AudioSource | None, *, video: bool) -> None:
        self.audio_source = audio_source
        self.audio_enabled = audio_source is not None
        #: Whether video lines are negotiated for sending at all.
        self.video_capable = video
        self.video_enabled = video
        self._audio_tracks: weakref.WeakSet[MediaStreamTrack] = weakref.WeakSet()
        self._video_tracks: weakref.WeakSet[PatternVideoTrack] = weakref.WeakSet()

    def audio_track(self) -> MediaStreamTrack | None:
        """A new audio track for one connection, or ``None`` without an audio source."""
        if self.audio_source is None:
            return None
        track = self.audio_source.create_track()
        track.enabled = self.audio_enabled
        self._audio_tracks.add(track)
        return track

    def video_track(self) -> PatternVideoTrack | None:
        """A new video track for one connection, or ``None`` while video is off."""
        if not self.video_enabled:
            return None
        track = PatternVideoTrack()
        self._video_tracks.add(track)
        return track

    def set_enabled(self, *, audio: bool | None = None, video: bool | None = None) -> None:
        """Turn sending on or off on every live track; ``None`` leaves a kind unchanged."""
        if audio is not None:
            self.audio_enabled = audio and self.audio_source is not None
            for track in self._audio_tracks:
                track.enabled = self.audio_enabled  # type: ignore[attr-defined]
        if video is not None:
            self.video_enabled = video and self.video_capable
            for vtrack in self._video_tracks:
                vtrack.enabled = self.video_enabled
