"""Azure text to speech against a local server of its REST API's wire format."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from media.agent.azure_tts import SAMPLE_RATE, AzureTtsError, AzureVoice, ssml, voice_for
from media.agent.interfaces import VoiceError, VoiceSpec
from tests.support.fake_azure_tts import FakeAzureTts


@pytest.fixture
async def server() -> AsyncIterator[FakeAzureTts]:
    fake = FakeAzureTts()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def voice(server: FakeAzureTts) -> AsyncIterator[AzureVoice]:
    made = AzureVoice(endpoint=server.endpoint, key=server.key)
    try:
        yield made
    finally:
        await made.aclose()
        await made.aclose()  # idempotent


async def test_a_line_streams_as_24khz_pcm_before_the_response_ends(
        server: FakeAzureTts, voice: AzureVoice) -> None:
    server.hold = asyncio.Event()
    text = "Tom & Jerry <say> 'hello' to you."
    stream = voice.speak(text, VoiceSpec(voice_id="en-GB-SoniaNeural"))
    first = await anext(stream)
    assert first and len(first) % 2 == 0
    assert server.finished == 0  # the service still holds the rest of the audio
    server.hold.set()
    pcm = first + b"".join([c async for c in stream])
    assert server.finished == 1
    assert voice.sample_rate == SAMPLE_RATE
    assert len(pcm) == 2 * round(len(text) * 0.060 * SAMPLE_RATE)  # all of it, at 24 kHz
    (request,) = server.requests
    assert (request.voice, request.lang, request.text) == ("en-GB-SoniaNeural", "en-GB", text)
    assert request.user_agent == "connvo-rtc-agent"


async def test_languages_pick_a_voice_and_foreign_ids_fall_back(
        server: FakeAzureTts, voice: AzureVoice, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="media.agent.azure_tts"):
        for spec in (VoiceSpec(), VoiceSpec(language="German"),
                     VoiceSpec(voice_id="6MoEUz34rbRrmmyxgRm4", language="fr-FR")):
            assert [c async for c in voice.speak("Bonjour.", spec)]
    assert [(r.voice, r.lang) for r in server.requests] == [
        ("en-US-JennyNeural", "en-US"), ("de-DE-KatjaNeural", "de-DE"),
        ("fr-FR-DeniseNeural", "fr-FR")]
    assert "'6MoEUz34rbRrmmyxgRm4' is not an Azure voice name" in caplog.text
    assert voice_for(VoiceSpec(language="en_gb")) == ("en-GB-SoniaNeural", "en-GB")
    assert voice_for(VoiceSpec(language="de")) == ("de-DE-KatjaNeural", "de-DE")


async def test_a_bad_key_is_a_clear_error(server: FakeAzureTts) -> None:
    voice = AzureVoice(endpoint=server.endpoint, key="wrong")
    try:
        with pytest.raises(AzureTtsError, match=r"HTTP 401 Unauthorized") as raised:
            await anext(voice.speak("Hello.", VoiceSpec()))
    finally:
        await voice.aclose()
    assert raised.value.status == 401
    assert isinstance(raised.value, VoiceError)
    assert server.requests == []


async def test_an_unknown_voice_is_the_services_400(voice: AzureVoice) -> None:
    with pytest.raises(AzureTtsError,
                       match=r"HTTP 400 Bad Request: Unsupported voice en-US-NobodyNeural"):
        await anext(voice.speak("Hello.", VoiceSpec(voice_id="en-US-NobodyNeural")))


async def test_the_fake_refuses_what_the_service_refuses(server: FakeAzureTts) -> None:
    headers = {"Ocp-Apim-Subscription-Key": server.key, "User-Agent": "t",
               "Content-Type": "application/ssml+xml",
               "X-Microsoft-OutputFormat": "raw-24khz-16bit-mono-pcm"}
    good = ssml("Hi.", "en-US-JennyNeural", "en-US")
    url = server.endpoint + "/cognitiveservices/v1"
    cases = [
        (headers, "<speak version='1.0'><voice name='x'>Hi", 400),
        (headers, "<speak version='1.0' xml:lang='en-US'>Hi.</speak>", 400),
        ({**headers, "Content-Type": "text/plain"}, good, 415),
        ({**headers, "X-Microsoft-OutputFormat": "riff-24khz-16bit-mono-pcm"}, good, 400),
        ({**headers, "User-Agent": "x" * 300}, good, 400),
        (headers, good, 200),
    ]
    async with aiohttp.ClientSession() as session:
        for sent, body, status in cases:
            async with session.post(url, data=body.encode(), headers=sent) as resp:
                assert resp.status == status, (sent, body)


async def test_nothing_listening_and_closing(server: FakeAzureTts) -> None:
    from signaling.testing.ports import free_port

    voice = AzureVoice(endpoint=f"http://127.0.0.1:{free_port()}", key="k")
    with pytest.raises(AzureTtsError, match="Cannot connect"):
        await anext(voice.speak("Hello.", VoiceSpec()))
    await voice.aclose()
    with pytest.raises(AzureTtsError, match="closed"):
        await anext(voice.speak("Hello.", VoiceSpec()))
    with pytest.raises(ValueError, match="key is empty"):
        AzureVoice(endpoint=server.endpoint, key="")
