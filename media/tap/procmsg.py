"""The tap's process protocol: every message between the tap and a recogniser process.

The tap (the parent) and each recogniser process (the child, :mod:`media.tap.child`) talk over
a socket pair. A frame is a 4-byte big-endian length and a msgpack body; the body is one
message, a tagged msgspec struct encoded as an array ``[tag, field, ...]`` (``array_like``):
positional on the wire, so a frame is only the tag's few bytes larger than the letter-tagged
tuples it replaced and encodes and decodes as fast (measured: ~0.5 us to frame an audio
message, ~0.15 us to decode one), but named and type-checked in the code.

Parent -> child (:data:`ToChild`): :class:`Begin`, :class:`Audio`, :class:`End`,
:class:`Forget`, :class:`Partials`, :class:`Quit`. Child -> parent (:data:`ToParent`):
:class:`Ready`, :class:`Result`, :class:`Failed`, :class:`Progress`.

:func:`frame` encodes; :func:`decode_to_child` and :func:`decode_to_parent` decode one body
and raise :class:`~media.errors.RecogniserProtocolError` on anything that is not a valid
message. :func:`split_frames` and :func:`read_frame` cut frames from a byte stream.
"""

from __future__ import annotations

import asyncio
import struct

import msgspec

from media.errors import RecogniserProtocolError

HEADER = struct.Struct(">I")
"""A frame's length prefix: the body's size in bytes."""
MAX_FRAME = 8 << 20
"""Read-buffer limit of the parent's stream reader (bytes)."""


# gc=False: every field is a str, bytes, bool or number, so a message can never be part of a
# reference cycle, and skipping the collector's tracking makes each message a little cheaper.
class _Message(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Base of every message."""


# --------------------------------------------------------------------------- parent -> child


class Begin(_Message, tag="begin", frozen=True):
    """A segment of ``stream`` starts."""

    stream: str
    segment: str
    """The segment's id, echoed in its results."""


class Audio(_Message, tag="audio", frozen=True):
    """Audio of ``stream``'s current segment: 16 kHz mono s16 PCM."""

    stream: str
    pcm: bytes


class End(_Message, tag="end", frozen=True):
    """``stream``'s current segment ended (or was cut short): its final follows."""

    stream: str


class Forget(_Message, tag="forget", frozen=True):
    """The speaker of ``stream`` left: drop its state."""

    stream: str


class Quit(_Message, tag="quit", frozen=True):
    """Stop: close the engine and exit."""


class Partials(_Message, tag="partials", frozen=True):
    """Make partial results (``on``) or not: the first thing a process that has fallen behind
    gives up (finals are unchanged), and taken back once it has caught up."""

    on: bool


ToChild = Begin | Audio | End | Forget | Quit | Partials


# --------------------------------------------------------------------------- child -> parent


class Ready(_Message, tag="ready", frozen=True):
    """The engine is loaded; the process takes streams."""

    pid: int


class Result(_Message, tag="result", frozen=True):
    """A partial (``final`` false) or the final text of one segment."""

    stream: str
    segment: str
    text: str
    final: bool
    segment_audio_s: float
    """Seconds of the segment's audio the engine had consumed for this result."""
    audio_s: float
    """Seconds of audio the process consumed since it started (all streams)."""
    cpu_s: float
    """CPU seconds the process spent recognising since it started."""


class Failed(_Message, tag="failed", frozen=True):
    """The engine raised on one segment: the segment is dropped, the process lives on."""

    stream: str
    segment: str
    error: str
    """The exception's ``repr`` (at most 200 characters), for the log."""
    audio_s: float
    cpu_s: float


class Progress(_Message, tag="progress", frozen=True):
    """Running totals since the process started: the parent's view of its backlog."""

    audio_s: float
    cpu_s: float


ToParent = Ready | Result | Failed | Progress


# --------------------------------------------------------------------------- codec

_encoder = msgspec.msgpack.Encoder()
_child_decoder = msgspec.msgpack.Decoder(ToChild)
_parent_decoder = msgspec.msgpack.Decoder(ToParent)


def frame(message: msgspec.Struct) -> bytes:
    """One message as a frame: its length prefix and its msgpack body (the tap's process link
    in ``hostmsg.py`` frames its messages the same way)."""
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def decode_to_child(body: bytes) -> ToChild:
    """Decode one body the parent sent or raise :class:`RecogniserProtocolError`."""
    try:
        return _child_decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise RecogniserProtocolError(f"bad message to a recogniser: {exc}") from None


def decode_to_parent(body: bytes) -> ToParent:
    """Decode one body a recogniser process sent or raise :class:`RecogniserProtocolError`."""
    try:
        return _parent_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RecogniserProtocolError(f"bad message from a recogniser: {exc}") from None


def split_frames(buffer: bytearray) -> list[bytes]:
    """Remove every complete frame from the front of ``buffer``; their bodies, in order.
    A partial frame at the end stays in ``buffer`` for the next read."""
    bodies: list[bytes] = []
    offset, end = 0, len(buffer)
    while end - offset >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer, offset)
        start = offset + HEADER.size
        if end - start < size:
            break
        bodies.append(bytes(buffer[start:start + size]))
        offset = start + size
    del buffer[:offset]
    return bodies


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame's body from ``reader``; raises :class:`asyncio.IncompleteReadError` when
    the stream ends first."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return await reader.readexactly(size)
