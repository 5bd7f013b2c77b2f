"""The tap's process protocol: every message survives a frame round trip, frames are cut from
a byte stream however it arrives, and anything that is not a message is a protocol error."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from media.errors import RecogniserProtocolError, TapError
from media.tap import procmsg
from media.tap.procmsg import (
    Audio,
    Begin,
    End,
    Failed,
    Forget,
    Progress,
    Quit,
    Ready,
    Result,
)

TO_CHILD: list[procmsg.ToChild] = [
    Begin("s1", "seg-1"),
    Audio("s1", bytes(range(256)) * 3),
    End("s1"),
    Forget("s1"),
    Quit(),
]
TO_PARENT: list[procmsg.ToParent] = [
    Ready(4242),
    Result("s1", "seg-1", "and so my fellow americans", False, 1.25, 30.5, 2.75),
    Result("s1", "seg-1", "", True, 0.0, 31.0, 3.0),
    Failed("s2", "seg-9", "EngineBusyError('all 6 decoders busy')", 31.0, 3.0),
    Progress(31.25, 3.5),
]


def _body(frame: bytes) -> bytes:
    (size,) = procmsg.HEADER.unpack_from(frame)
    assert len(frame) == procmsg.HEADER.size + size
    return frame[procmsg.HEADER.size:]


@pytest.mark.parametrize("message", TO_CHILD, ids=lambda m: type(m).__name__)
def test_every_message_to_a_child_round_trips(message: procmsg.ToChild) -> None:
    assert procmsg.decode_to_child(_body(procmsg.frame(message))) == message


@pytest.mark.parametrize("message", TO_PARENT, ids=lambda m: type(m).__name__)
def test_every_message_to_the_parent_round_trips(message: procmsg.ToParent) -> None:
    assert procmsg.decode_to_parent(_body(procmsg.frame(message))) == message


def test_the_wire_form_is_a_short_tagged_array() -> None:
    """Audio is nearly every frame: the body is ``[tag, stream, pcm]``, a few bytes over the
    PCM (length prefix, array and bin headers, the tag, the stream id)."""
    pcm = bytes(640)
    frame = procmsg.frame(Audio("s12", pcm))
    assert msgspec.msgpack.decode(_body(frame)) == ["audio", "s12", pcm]
    assert len(frame) - len(pcm) <= 24


def test_split_frames_cuts_whole_frames_and_keeps_a_partial_one() -> None:
    stream = b"".join(procmsg.frame(m) for m in TO_CHILD)
    for cut in (1, 3, 7, len(stream) // 2, len(stream) - 1):
        buffer = bytearray()
        decoded: list[procmsg.ToChild] = []
        for start in range(0, len(stream), cut):
            buffer += stream[start:start + cut]
            decoded += [procmsg.decode_to_child(b) for b in procmsg.split_frames(buffer)]
        assert decoded == TO_CHILD and not buffer, cut


async def test_read_frame_reads_one_body_at_a_time() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"".join(procmsg.frame(m) for m in TO_PARENT))
    reader.feed_eof()
    got = [procmsg.decode_to_parent(await procmsg.read_frame(reader)) for _ in TO_PARENT]
    assert got == TO_PARENT
    with pytest.raises(asyncio.IncompleteReadError):
        await procmsg.read_frame(reader)


@pytest.mark.parametrize("body", [
    b"",  # empty
    b"\xc1",  # not msgpack
    msgspec.msgpack.encode(["nope", "s1"]),  # unknown tag
    msgspec.msgpack.encode(["begin", "s1"]),  # a field missing
    msgspec.msgpack.encode(["audio", "s1", "not bytes"]),  # a field of the wrong type
    msgspec.msgpack.encode(("a", "s1", b"pcm")),  # the old letter-tagged tuple
    _body(procmsg.frame(Ready(1))),  # the other direction's message
], ids=["empty", "not-msgpack", "unknown-tag", "missing-field", "wrong-type", "old-tuple",
        "wrong-direction"])
def test_anything_else_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(RecogniserProtocolError) as caught:
        procmsg.decode_to_child(body)
    assert isinstance(caught.value, TapError) and caught.value.code == "recogniser-protocol-error"


def test_a_child_message_sent_to_the_parent_is_a_protocol_error() -> None:
    with pytest.raises(RecogniserProtocolError):
        procmsg.decode_to_parent(_body(procmsg.frame(Begin("s1", "seg"))))
