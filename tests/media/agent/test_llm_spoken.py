"""The LLM brain in the agent's conversation: its first sentence is *spoken* (the agent's
outgoing Opus stream carries speech, from the real espeak-ng voice) while the local
chat-completions server still holds the end of the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from media.agent.conversation import Conversation
from media.agent.espeak import EspeakVoice
from media.agent.interfaces import VoiceSpec
from media.agent.llm import LlmBrain
from media.agent.outgoing import OutgoingAudio
from tests.conftest import require_binary
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.waiting import wait_until


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_the_first_sentence_is_spoken_before_the_stream_ends(server: FakeOpenAI) -> None:
    require_binary("espeak-ng")
    release = asyncio.Event()
    server.replies.append(Reply(["Three years, ", "nice. What", " did you", release,
                                 " build there?"]))
    brain = LlmBrain(base_url=server.base_url, model="gpt-test", api_key=server.api_key,
                     instructions="You are Alex, a recruiter.", welcome_message="",
                     timeout_s=5.0, read_timeout_s=10.0)
    lines: list[str] = []
    audio = OutgoingAudio(name="test")
    audio.create_track()  # nobody reads it: the producer drops into its bounded queue
    audio.start()
    talk = Conversation(brain, EspeakVoice(), VoiceSpec(language="English"), audio,
                        on_line=lambda _seg, text, _int, _s, _e: lines.append(text))
    try:
        talk.speech_started("p1", "s1")  # the person's turn (no welcome: nothing said yet)
        talk.speech_ended("p1", "s1", 0.0)
        talk.final("p1", "s1", "i have three years of experience")
        # The agent's voice goes out while the server still holds the rest of the reply.
        await wait_until(lambda: audio.speech_frames > 0, timeout=10,
                         what="the agent speaking the first sentence")
        assert server.finished == 0 and not release.is_set()
        spoken_before_end = audio.speech_frames
        release.set()
        await wait_until(lambda: lines, timeout=15, what="the whole reply spoken")
    finally:
        await talk.aclose()
        await audio.aclose()
        await brain.aclose()
    print(f"\n{spoken_before_end * 20} ms of speech out before the stream ended; line {lines}")
    assert server.finished == 1
    assert lines == ["Three years, nice. What did you build there?"]
