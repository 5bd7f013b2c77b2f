"""One contract, every implementation: the voices (espeak-ng, Azure against its local
server) and the brains (script, LLM against its local server) behave alike where the agent
relies on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from media.agent.azure_tts import AzureVoice
from media.agent.espeak import EspeakVoice
from media.agent.interfaces import Brain, BrainEvent, Line, Voice, VoiceError, VoiceSpec
from media.agent.llm import LlmBrain
from media.agent.script import ScriptBrain
from signaling.scenarios import load_scenarios
from tests.conftest import require_binary
from tests.support.fake_azure_tts import FakeAzureTts
from tests.support.fake_openai import FakeOpenAI, Reply


@pytest.fixture(params=["espeak", "azure"])
async def voice(request: pytest.FixtureRequest) -> AsyncIterator[Voice]:
    if request.param == "espeak":
        require_binary("espeak-ng")
        made: Voice = EspeakVoice()
        yield made
        await made.aclose()
        return
    server = FakeAzureTts()
    await server.start()
    made = AzureVoice(endpoint=server.endpoint, key=server.key)
    try:
        yield made
    finally:
        await made.aclose()
        await server.stop()


@pytest.fixture(params=["script", "openai"])
async def brain(request: pytest.FixtureRequest) -> AsyncIterator[Brain]:
    scenario = load_scenarios()["coffee-order"]
    if request.param == "script":
        made: Brain = ScriptBrain(scenario.script, welcome_message="Hi.")
        yield made
        await made.aclose()
        return
    server = FakeOpenAI()
    await server.start()
    for _ in range(3):
        server.replies.append(Reply(["Sure", ", a small tea. ", "Anything else?"]))
    made = LlmBrain(base_url=server.base_url, model="m", api_key=server.api_key,
                    instructions=scenario.persona.instructions, welcome_message="Hi.")
    try:
        yield made
    finally:
        await made.aclose()
        await server.stop()


async def test_a_voice_yields_whole_samples_and_stops_when_told(voice: Voice) -> None:
    spec = VoiceSpec()
    chunks = [c async for c in voice.speak("Would you like milk with that?", spec)]
    assert chunks and all(isinstance(c, bytes) and len(c) % 2 == 0 for c in chunks)
    seconds = sum(map(len, chunks)) / 2 / voice.sample_rate
    assert 0.5 < seconds < 5
    assert [c async for c in voice.speak(" \n ", spec)] == []
    stream = voice.speak("A long line. " * 40, spec)
    assert await anext(stream)
    await stream.aclose()  # barge-in: no error, nothing left running
    await voice.aclose()
    await voice.aclose()
    with pytest.raises(VoiceError):
        await anext(voice.speak("Hello.", spec))


async def test_a_brain_welcomes_replies_and_keeps_quiet_when_interrupted(brain: Brain) -> None:
    async def text(history: list[Line], event: BrainEvent) -> str:
        out = [c async for c in brain.respond(history, event)]
        assert all(isinstance(c, str) for c in out)
        return "".join(out)

    assert (await text([], BrainEvent("start"))).startswith("Hi.")
    history = [Line("agent", "Hi."), Line("agent", "What would you like to drink today?")]
    assert await text(history, BrainEvent("interrupted")) == ""
    reply = await text(history, BrainEvent("turn", "I would like a cup of tea please"))
    assert reply.strip()
    assert isinstance(brain.expected(), (list, tuple))
    assert brain.finished is False
    await brain.aclose()
    await brain.aclose()
