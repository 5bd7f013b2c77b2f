"""Brains and voices from the [agent] settings; the settings' validation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from media.agent.azure_tts import AzureVoice
from media.agent.espeak import EspeakVoice
from media.agent.factory import make_brain, make_voice, scenarios, voice_spec
from media.agent.interfaces import BrainEvent
from media.agent.llm import LlmBrain
from media.agent.script import ScriptBrain
from signaling.protocol import AgentSpec
from signaling.settings import ConfigError, load_settings
from tests.support.fake_openai import FakeOpenAI, Reply

SECRET = "s" * 32


def settings(**agent: object):  # type: ignore[no-untyped-def]
    return load_settings(None, env={}, overrides={"auth": {"secrets": SECRET},
                                                 "agent": agent})


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_the_default_is_the_script_brain_and_espeak(espeak: None) -> None:
    agent = settings().agent
    found = scenarios(agent)
    interview = found["interview-practice"]
    spec = AgentSpec(scenario_id="interview-practice", name="Alex",
                     welcome_message="Hi Ann, I am Alex.")
    brain = make_brain(agent, interview, spec)
    assert isinstance(brain, ScriptBrain)
    lines = [c async for c in brain.respond([], BrainEvent("start"))]
    assert lines[0] == "Hi Ann, I am Alex. "  # the meeting's welcome over the persona's
    voice = make_voice(agent)
    assert isinstance(voice, EspeakVoice) and voice.rate == 150
    await voice.aclose()
    assert voice_spec(interview, spec).language == "English"
    assert voice_spec(interview, AgentSpec(scenario_id="x", name="A", voice_id="de+f2",
                                           language="German")).voice_id == "de+f2"


async def test_the_openai_brain_speaks_with_the_persona(llm_server: FakeOpenAI) -> None:
    agent = settings(brain="openai", llm_base_url=llm_server.base_url, llm_model="small",
                     llm_api_key=llm_server.api_key).agent
    coffee = scenarios(agent)["coffee-order"]
    brain = make_brain(agent, coffee)
    try:
        assert isinstance(brain, LlmBrain)
        llm_server.replies.append(Reply(["Tea it is."]))
        said = "".join([c async for c in brain.respond([], BrainEvent("turn", "tea"))])
        assert said == "Tea it is."
        system = llm_server.requests[0]["messages"][0]
        assert system["role"] == "system"
        assert system["content"].startswith(coffee.persona.instructions)
        assert "Your name is Sam. Speak English." in system["content"]
    finally:
        await brain.aclose()


async def test_the_azure_voice_from_settings() -> None:
    agent = settings(voice="azure", azure_endpoint="https://westeurope.tts.speech.microsoft.com",
                     azure_key="k" * 32).agent
    voice = make_voice(agent)
    assert isinstance(voice, AzureVoice)
    assert voice.url == "https://westeurope.tts.speech.microsoft.com/cognitiveservices/v1"
    await voice.aclose()


@pytest.mark.parametrize(("agent", "message"), [
    ({"brain": "gpt"}, "agent.brain 'gpt' must be script or openai"),
    ({"voice": "elevenlabs"}, "agent.voice 'elevenlabs' must be espeak or azure"),
    ({"brain": "openai", "llm_model": "m", "llm_api_key": "k"},
     "agent.brain = openai needs agent.llm_base_url"),
    ({"brain": "openai", "llm_base_url": "http://api.example.com/v1", "llm_model": "m",
      "llm_api_key": "k"}, "http:// only to a loopback host"),
    ({"brain": "openai", "llm_base_url": "https://api.example.com/v1", "llm_api_key": "k"},
     "needs agent.llm_model"),
    ({"brain": "openai", "llm_base_url": "http://127.0.0.1:9/v1", "llm_model": "m"},
     "needs agent.llm_api_key"),
    ({"voice": "azure", "azure_key": "k"}, "agent.voice = azure needs agent.azure_endpoint"),
    ({"voice": "azure", "azure_endpoint": "https://x.tts.speech.microsoft.com"},
     "needs agent.azure_key"),
    ({"scenarios_dir": "/nonexistent/scenarios"}, "is not a directory"),
    ({"espeak_rate": 30}, "agent.espeak_rate must be 80..450"),
])
def test_bad_agent_settings_are_refused(agent: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**agent)
