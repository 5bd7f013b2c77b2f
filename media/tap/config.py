"""Configuration of a tap worker: one frozen dataclass of plain values.

Like the rest of ``media/`` it takes plain arguments, never the hub's settings object; the hub
builds one from its ``tap.*`` settings and ``connvo-rtc tap`` from its flags.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from media.errors import TapConfigError
from signaling.s3 import S3Config


@dataclass(frozen=True)
class TapConfig:
    """Everything a :class:`~media.tap.worker.TapWorker` needs."""

    # ------------------------------------------------------------------ recogniser
    recognizer: str = "pocketsphinx"
    """Speech recogniser back-end: a registered name (``pocketsphinx``), an installed plug-in's
    entry point in group ``connvo_rtc.transcribers``, or ``package.module:factory`` (see
    docs/transcription.md)."""
    processes: int = 1
    """Recogniser processes. Each decodes on its own core, never on an event loop; a speaker's
    segments always go to the same process (its adaptation state lives there)."""
    recognizer_options: Mapping[str, Any] = field(default_factory=dict)
    """Engine-specific options passed to the back-end (for pocketsphinx: decoder parameters such
    as ``hmm``, ``lm``, ``dict``, ``beam``; ``decoders`` per process; ``prime_s``)."""
    max_backlog_s: float = 15.0
    """Seconds of speech queued for one recogniser process before new segments are dropped
    (and a running one is cut at twice this): the tap drops rather than falls ever further
    behind."""

    # ------------------------------------------------------------------ jobs and rooms
    reclaim_after_s: float = 10.0
    """A job whose worker stopped renewing it this long is handed to another worker (must match
    the job queue's setting; informational here)."""
    renew_every_s: float = 2.0
    """Seconds between claim renewals while serving a room (well under ``reclaim_after_s``)."""
    claim_timeout_s: float = 1.0
    """How long one claim call waits for a job; bounds how fast a free worker notices one."""
    max_rooms: int = 16
    """Rooms one worker serves at once; it stops claiming beyond this."""
    linger_empty_s: float = 10.0
    """Leave (and complete the job) after the room has had no participant this long, seconds."""
    join_retry_s: float = 30.0
    """Keep retrying a refused join (``room-full`` while a dead tap's seat is still held, hub
    unreachable) this long before giving the job back, seconds."""
    pin_host_addresses: tuple[str, ...] | None = None
    """Gather ICE host candidates only on these addresses (tests: ``("127.0.0.1",)``)."""
    ice_timeout_s: float = 15.0
    """Offer -> connected deadline per participant, seconds."""
    agent: Mapping[str, Any] = field(default_factory=dict)
    """The ``[agent]`` settings (:class:`~signaling.settings.AgentSettings` fields) for rooms
    with an AI persona: brain, voice, scenarios directory (the hub's and its workers' must
    hold the same scenarios). Empty: the defaults (script brain, espeak-ng, shipped
    scenarios)."""
    recording_dir: str = "recordings"
    """Where rooms that record keep their files (:class:`~signaling.recording_storage.
    DirectoryStorage`); the hubs serve downloads from the same directory. With
    ``recording_s3``: the local spool the files are uploaded from."""
    recording_s3: S3Config | None = None
    """The bucket recordings go to (:class:`~signaling.recording_s3.S3Storage`), or None for
    the directory."""

    # ------------------------------------------------------------------ voice activity
    vad_mode: int = 2
    """WebRTC VAD aggressiveness, 0 (loose) .. 3 (strict) (``pocketsphinx.Vad``)."""
    silence_dbfs: float = -50.0
    """Frames whose peak is below this level (dBFS) are silence without asking the VAD: a muted
    or quiet participant costs a comparison per frame."""
    speech_start_s: float = 0.3
    """Window in which ``speech_ratio`` of the frames must be voiced to start a segment, s."""
    speech_ratio: float = 0.6
    """Fraction of voiced frames in the start window that starts a segment."""
    speech_end_s: float = 0.4
    """Unvoiced time that ends a segment, seconds (the floor of end-of-speech -> final text).
    It is also the segment's hang-over: the audio after its last voiced frame goes with it, so
    trailing words (and the background after them) reach the recogniser."""
    pre_roll_s: float = 0.2
    """Audio before a segment's first voiced frame sent with it, seconds (whole 30 ms frames:
    0.2 is 0.21). pocketsphinx needs background before the first word or it loses that word;
    more than ~0.3 s costs accuracy again (docs/transcription.md, "Segmentation")."""
    max_segment_s: float = 10.0
    """A segment longer than this is ended and a new one started, seconds (bounds the final's
    latency: pocketsphinx's second pass runs at the segment's end)."""
    partial_interval_s: float = 0.5
    """Seconds of speech between partial results; 0 sends finals only."""
    chunk_s: float = 0.12
    """Audio is handed to the recogniser in chunks of about this length, seconds."""

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.processes <= 64, "processes must be 1..64"),
            (0 < self.renew_every_s < self.reclaim_after_s,
             "renew_every_s must be positive and below reclaim_after_s"),
            (self.claim_timeout_s > 0, "claim_timeout_s must be positive"),
            (self.max_rooms >= 1, "max_rooms must be at least 1"),
            (self.linger_empty_s >= 0 and self.join_retry_s >= 0,
             "linger_empty_s and join_retry_s must be >= 0"),
            (0 <= self.vad_mode <= 3, "vad_mode must be 0..3"),
            (-96 <= self.silence_dbfs <= 0, "silence_dbfs must be -96..0"),
            (0.03 <= self.speech_start_s <= 2, "speech_start_s must be 0.03..2"),
            (0 < self.speech_ratio <= 1, "speech_ratio must be within (0, 1]"),
            (0.03 <= self.speech_end_s <= 5, "speech_end_s must be 0.03..5"),
            (0 <= self.pre_roll_s <= 2, "pre_roll_s must be 0..2"),
            (1 <= self.max_segment_s <= 120, "max_segment_s must be 1..120"),
            (self.partial_interval_s >= 0, "partial_interval_s must be >= 0"),
            (0.03 <= self.chunk_s <= 1, "chunk_s must be 0.03..1"),
            (self.max_backlog_s > 0, "max_backlog_s must be positive"),
            (bool(self.recognizer), "recognizer must be named"),
            (bool(self.recording_dir.strip()), "recording_dir must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise TapConfigError(f"tap config: {message}")
        for address in self.pin_host_addresses or ():
            ipaddress.ip_address(address)
