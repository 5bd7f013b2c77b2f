"""The agent's outgoing audio and its conversation logic, without a network: one encoder
for every connection, barge-in drops what is queued, and the conversation's turn rules
(a fake brain and a tone voice implementing the interfaces)."""

from __future__ import annotations

import math
from array import array
from collections.abc import AsyncIterator, Sequence

import av

from media.agent.conversation import Conversation
from media.agent.interfaces import BrainEvent, Line, VoiceSpec
from media.agent.outgoing import OutgoingAudio, Resampler48
from tests.media.agent.fakes import LinesBrain
from tests.waiting import wait_until


def tone(seconds: float, rate: int = 48_000) -> bytes:
    return array("h", (int(8000 * math.sin(2 * math.pi * 440 * i / rate))
                       for i in range(int(seconds * rate)))).tobytes()


class ToneVoice:
    """Half a second of tone per sentence, at 16 kHz (so the agent resamples)."""

    sample_rate = 16_000

    async def speak(self, text: str, voice: VoiceSpec) -> AsyncIterator[bytes]:
        pcm = tone(0.5, self.sample_rate)
        for i in range(0, len(pcm), 640):
            yield pcm[i : i + 640]

    async def aclose(self) -> None:
        return None


async def test_every_connection_gets_the_same_packets_encoded_once() -> None:
    audio = OutgoingAudio(name="test")
    first, second = audio.create_track(), audio.create_track()
    audio.start()
    try:
        audio.play(tone(0.2), tag="line")
        got: list[tuple[bytes, bytes]] = []
        for _ in range(14):
            a, b = await first.recv(), await second.recv()
            assert isinstance(a, av.Packet) and isinstance(b, av.Packet)
            assert a.pts == b.pts
            got.append((bytes(a), bytes(b)))
        assert all(x == y for x, y in got)
        assert sum(1 for x, _ in got if x != audio.silence) >= 9  # the speech, not silence
        await wait_until(lambda: not audio.speaking, what="the tone played out")
        assert audio.played("line") == int(0.2 * 48_000)
        assert audio.speech_frames == 10  # 200 ms: ten frames encoded, for both tracks
    finally:
        await audio.aclose()
        await audio.aclose()  # idempotent


async def test_clear_drops_everything_queued_at_once() -> None:
    audio = OutgoingAudio()
    track = audio.create_track()
    audio.start()
    try:
        audio.play(tone(5.0), tag="long")
        for _ in range(5):
            await track.recv()
        audio.clear()
        assert not audio.speaking
        after = [bytes(await track.recv()) for _ in range(5)]
        assert after == [audio.silence] * 5
        assert 0 < audio.played("long") < 48_000
    finally:
        await audio.aclose()


def test_resampling_to_48k_keeps_the_duration() -> None:
    resampler = Resampler48(22_050)
    pcm = tone(1.0, 22_050)
    out = b"".join(resampler.resample(pcm[i : i + 441]) for i in range(0, len(pcm), 441))
    out += resampler.flush()
    assert abs(len(out) // 2 - 48_000) < 100


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, bool]] = []

    def __call__(self, segment_id: str, text: str, interrupted: bool, start: float,
                 end: float) -> None:
        self.lines.append((text, interrupted))


async def conversation(lines: Sequence[str]) -> tuple[Conversation, LinesBrain, Lines]:
    brain = LinesBrain(lines)
    sink = Lines()
    audio = OutgoingAudio()
    audio.create_track()  # nobody reads it: the producer drops into its bounded queue
    audio.start()
    return Conversation(brain, ToneVoice(), VoiceSpec(), audio, on_line=sink), brain, sink


async def test_a_turn_ends_at_the_segments_end_and_its_final_not_before() -> None:
    talk, brain, sink = await conversation(["Hello there.", "Nice to meet you."])
    try:
        talk.begin()
        await wait_until(lambda: sink.lines, timeout=5, what="the welcome")
        talk.speech_started("p1", "s1")
        talk.speech_ended("p1", "s1", 0.0)
        talk.speech_started("p1", "s2")  # a pause, then more: the turn goes on
        talk.final("p1", "s1", "my name is")
        assert not talk.replying
        talk.speech_ended("p1", "s2", 0.0)
        assert not talk.replying  # the end of speech alone is not the end of the turn
        talk.final("p1", "s2", "bob")
        assert talk.replying
        await wait_until(lambda: len(sink.lines) == 2, timeout=5, what="the reply")
        assert sink.lines == [("Hello there.", False), ("Nice to meet you.", False)]
        assert brain.events[1] == BrainEvent("turn", "my name is bob")
        assert talk.history[1:3] == [Line("person", "my name is"), Line("person", "bob")]
    finally:
        await talk.aclose()
        await talk.aclose()


async def test_barge_in_stops_the_line_and_stores_what_was_said() -> None:
    long = "One two three. Four five six. Seven eight nine."
    talk, brain, sink = await conversation([long, "Go on."])
    try:
        talk.begin()
        await wait_until(lambda: talk.audio.played(_tag(talk, 1)) > 0, timeout=5,
                         what="the second sentence playing")
        talk.speech_started("p1", "s1")
        assert not talk.replying and not talk.audio.speaking
        assert sink.lines and sink.lines[0][1]  # stored as interrupted
        said = sink.lines[0][0]
        assert said.startswith("One two three.") and said != long
        await wait_until(lambda: any(e.kind == "interrupted" for e in brain.events),
                         timeout=5, what="the brain told")
        assert talk.history[-1] == Line("agent", said, interrupted=True)
    finally:
        await talk.aclose()


def _tag(talk: Conversation, index: int) -> tuple[str, int]:
    reply = talk._reply  # the reply under way
    assert reply is not None
    return (reply.segment_id, index)


async def test_a_long_silence_after_the_agents_line_tells_the_brain_once() -> None:
    talk, brain, sink = await conversation(["Hello there.", "Still there?"])
    talk.silence_s = 0.2
    try:
        talk.begin()
        await wait_until(lambda: sink.lines, timeout=5, what="the welcome")

        def told() -> bool:
            talk.tick()
            return any(e.kind == "silence" for e in brain.events)

        await wait_until(told, timeout=5, what="the silence event")
        await wait_until(lambda: not talk.replying, timeout=5, what="the silence reply done")
        for _ in range(3):
            talk.tick()
        assert [e.kind for e in brain.events].count("silence") == 1
    finally:
        await talk.aclose()
