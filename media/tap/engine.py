"""The interface a speech recogniser implements to run inside a recogniser process.

An :class:`Engine` is small and synchronous; :class:`~media.tap.procpool.ProcessTranscriber`
does everything else (processes, framing, stream affinity, back-pressure, restarts) and
:class:`~media.tap.child.RecogniserChild` drives the engine inside each process.
"""

from __future__ import annotations

from typing import Protocol


class Engine(Protocol):
    """A speech recogniser inside one recogniser process: synchronous, single-threaded.

    Calls for one stream come in order ``begin``, ``accept``\\*, (``partial``), ``end``; calls for
    different streams interleave, so an engine that can decode only one utterance at a time
    keeps one decoder per active stream. Raising from a call drops that segment only.
    The factory is named by an import path (``package.module:Class``) because it is loaded in
    the child; it is called with the back-end's options mapping.

    Optional: ``idle() -> bool``, called when the process has had no input for
    :data:`~media.tap.child.IDLE_AFTER_S`, for set-up that would otherwise delay a speaker
    (pocketsphinx makes a spare decoder there); it returns whether to call it again at the next
    idle moment. Its CPU time is not counted as recognition.
    """

    def begin(self, stream_id: str) -> None:
        """A segment of ``stream_id`` starts."""
        ...

    def accept(self, stream_id: str, pcm: bytes) -> None:
        """Audio of the current segment (16 kHz mono s16)."""
        ...

    def partial(self, stream_id: str) -> str:
        """The best hypothesis so far ("" if none)."""
        ...

    def end(self, stream_id: str) -> str:
        """Finish the segment; its final text."""
        ...

    def forget(self, stream_id: str) -> None:
        """Drop the stream's state (the speaker left)."""
        ...

    def close(self) -> None:
        """Release everything (the process is ending)."""
        ...
