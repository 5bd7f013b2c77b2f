"""The recogniser interface the tap talks to, and the registry that picks one by name.

A :class:`Transcriber` serves every speaker of every room a tap worker holds. The tap opens
one :class:`SpeechStream` per speaker and, per voiced segment, calls ``start_segment``,
``write`` (16 kHz mono s16 PCM, little-endian) and ``end_segment``; results come back through
the stream's callback as :class:`Recognition` values: zero or more partials, then exactly one
final per started segment (its text may be empty). Everything is non-blocking: a transcriber
that falls behind drops segments (counted in :class:`TranscriberStats`) rather than blocking
the event loop or buffering without bound.

Engines that hold the GIL (pocketsphinx, Vosk, whisper.cpp bindings) implement the small
synchronous :class:`~media.tap.engine.Engine` instead and run inside
:class:`~media.tap.procpool.ProcessTranscriber`, which owns the processes, the framing, stream
affinity, back-pressure and restarts. Network engines (a cloud API) implement
:class:`Transcriber` directly. How to add one: docs/transcription.md.

Resolution of ``TapConfig.recognizer`` (:func:`create_transcriber`): a built-in name
(:data:`BUILTIN`), then an installed distribution's entry point in group
``connvo_rtc.transcribers``, then a ``package.module:factory`` path. A factory takes the
:class:`~media.tap.config.TapConfig` and returns a :class:`Transcriber`.
"""

from __future__ import annotations

import importlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from media.errors import UnknownTranscriberError

if TYPE_CHECKING:
    from .config import TapConfig

SAMPLE_RATE = 16_000
"""Sample rate of the PCM every transcriber receives (Hz): mono, signed 16-bit."""
BYTES_PER_SECOND = SAMPLE_RATE * 2


@dataclass(frozen=True)
class Recognition:
    """One result for one segment of one stream."""

    segment_id: str
    """The id given to :meth:`SpeechStream.start_segment`."""
    text: str
    """Recognised words (lowercase for pocketsphinx); may be empty."""
    final: bool
    """True once per segment: the text no longer changes. Partials before it are replaced."""
    audio_s: float = 0.0
    """Seconds of the segment's audio the recogniser had consumed for this result."""
    dropped: bool = False
    """The segment was dropped or cut short (recogniser behind, or its process died)."""


RecognitionCallback = Callable[[Recognition], None]


class SpeechStream(Protocol):
    """One speaker's audio towards a transcriber. Calls are cheap and never block."""

    def start_segment(self, segment_id: str) -> bool:
        """A voiced segment begins. False when the transcriber drops it (too far behind); a
        final with ``dropped=True`` still follows, and writes until ``end_segment`` are
        ignored."""
        ...

    def write(self, pcm: bytes) -> None:
        """More audio of the current segment (16 kHz mono s16); ignored outside a segment."""
        ...

    def end_segment(self) -> None:
        """The segment ended: its final result follows."""
        ...

    def close(self) -> None:
        """The speaker left: end any open segment (its final still arrives) and forget the
        speaker's adaptation state. Idempotent."""
        ...


class Transcriber(Protocol):
    """A speech recogniser serving many streams."""

    async def start(self) -> None:
        """Load models / start processes; returns when ready to accept streams."""
        ...

    def open_stream(self, on_result: RecognitionCallback, *, name: str = "") -> SpeechStream:
        """A new stream; ``on_result`` is called on the event loop for each result (it must
        return quickly). ``name`` labels log lines (room and peer)."""
        ...

    @property
    def stats(self) -> TranscriberStats:
        """Counters since start."""
        ...

    async def aclose(self) -> None:
        """Stop (idempotent): pending results are abandoned, processes end."""
        ...


@dataclass
class TranscriberStats:
    """What a transcriber did (for logs, metrics and ``bench/tap.py``)."""

    segments: int = 0
    """Segments started."""
    finals: int = 0
    """Final results delivered."""
    partials: int = 0
    """Partial results delivered."""
    dropped_segments: int = 0
    """Segments refused or cut short because the recogniser was behind or died."""
    audio_s: float = 0.0
    """Seconds of audio the recogniser processes consumed."""
    cpu_s: float = 0.0
    """CPU seconds the recogniser processes spent (their own clocks)."""
    restarts: int = 0
    """Recogniser processes restarted after dying."""
    final_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    """Seconds from ``end_segment`` to the final result, most recent last."""

    @property
    def real_time_factor(self) -> float | None:
        """Recogniser CPU seconds per second of audio (below 1: faster than real time)."""
        return self.cpu_s / self.audio_s if self.audio_s > 0 else None


TranscriberFactory = Callable[["TapConfig"], Transcriber]

#: Built-in back-ends: name -> ``module:factory``.
BUILTIN: Mapping[str, str] = MappingProxyType({
    "pocketsphinx": "media.tap.pocketsphinx_backend:create",
})

ENTRY_POINT_GROUP = "connvo_rtc.transcribers"


def load_object(path: str) -> object:
    """Import ``package.module:attribute`` (raises :class:`UnknownTranscriberError`)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UnknownTranscriberError(f"{path!r} is not of the form package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownTranscriberError(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attribute)  # type: ignore[no-any-return]
    except AttributeError:
        raise UnknownTranscriberError(f"{module_name!r} has no {attribute!r}") from None


def resolve(name: str) -> TranscriberFactory:
    """The factory ``name`` stands for (built-in, entry point, or import path)."""
    if name in BUILTIN:
        return load_object(BUILTIN[name])  # type: ignore[return-value]
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return entry.load()  # type: ignore[no-any-return]
    if ":" in name:
        factory = load_object(name)
        if not callable(factory):
            raise UnknownTranscriberError(f"{name!r} is not callable")
        return factory  # type: ignore[return-value]
    known = ", ".join(sorted(BUILTIN))
    raise UnknownTranscriberError(
        f"unknown recognizer {name!r} (built-in: {known}; or an entry point in "
        f"{ENTRY_POINT_GROUP!r}; or package.module:factory)")


def create_transcriber(config: TapConfig) -> Transcriber:
    """Build (not start) the transcriber ``config.recognizer`` names."""
    return resolve(config.recognizer)(config)
