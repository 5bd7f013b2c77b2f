"""The transcription tap: joins transcription rooms as role ``tap`` and streams text back.

- :mod:`media.tap.worker` -- :class:`TapWorker`: claims tap jobs, one session per room.
- :mod:`media.tap.session` -- :class:`TapSession`: one room; speakers' pipelines; transcripts.
- :mod:`media.tap.pipeline` -- 48 kHz frames -> 16 kHz mono s16 -> voiced segments.
- :mod:`media.tap.transcriber` -- the :class:`Transcriber` interface and the back-end registry.
- :mod:`media.tap.procpool` -- :class:`ProcessTranscriber`: GIL-holding engines in processes.
- :mod:`media.tap.engine` -- the :class:`Engine` interface such an engine implements.
- :mod:`media.tap.procmsg` -- the messages between the tap and its recogniser processes.
- :mod:`media.tap.child` -- inside a recogniser process: the loop that drives the engine.
- :mod:`media.tap.pocketsphinx_backend` -- the embedded default engine.
- :mod:`media.tap.cli` -- ``connvo-rtc tap``: standalone workers.

Errors are :class:`~media.errors.TapError` and its subclasses, in :mod:`media.errors`.

See docs/transcription.md.
"""

from .config import TapConfig
from .transcriber import (
    Recognition,
    SpeechStream,
    Transcriber,
    TranscriberStats,
    UnknownTranscriberError,
    create_transcriber,
)

__all__ = [
    "Recognition",
    "SpeechStream",
    "TapConfig",
    "Transcriber",
    "TranscriberStats",
    "UnknownTranscriberError",
    "create_transcriber",
]
