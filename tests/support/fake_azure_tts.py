"""A local server of Azure's text-to-speech REST API for tests: aiohttp on 127.0.0.1.

``POST /cognitiveservices/v1`` as the Speech service answers it: ``401`` without the right
``Ocp-Apim-Subscription-Key``, ``415`` unless ``Content-Type: application/ssml+xml``,
``400`` for a missing or unknown ``X-Microsoft-OutputFormat``, a missing or over-long
``User-Agent``, SSML that does not parse (a ``<speak version="1.0" xml:lang>`` with a
``<voice name>``) or a voice it does not have (:attr:`FakeAzureTts.voices`). A good request
is answered with headerless 16-bit mono PCM at the format's rate (``raw-24khz-...``: 24000
Hz), ``ms_per_char`` of a 220 Hz tone per character of text, in ``chunk_ms`` chunks; ``hold``
(an Event) keeps the rest of the body back after the first chunk until it is set.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from signaling.testing.ports import free_port
from tests.support.loopback_http import serve_on_loopback

SSML_NS = "{http://www.w3.org/2001/10/synthesis}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
RATES = {"8khz": 8000, "16khz": 16000, "22050hz": 22050, "24khz": 24000, "44100hz": 44100,
         "48khz": 48000}


@dataclass(frozen=True)
class Synthesis:
    """One accepted request: the voice, its xml:lang and the text, as the SSML said."""

    voice: str
    lang: str
    text: str
    user_agent: str


@dataclass
class FakeAzureTts:
    key: str = "azure-test-key"
    port: int = field(default_factory=free_port)
    voices: set[str] = field(default_factory=lambda: {
        "en-US-JennyNeural", "en-GB-SoniaNeural", "de-DE-KatjaNeural", "fr-FR-DeniseNeural",
        "en-US-GuyNeural"})
    ms_per_char: float = 60.0
    chunk_ms: int = 100
    hold: asyncio.Event | None = None
    requests: list[Synthesis] = field(default_factory=list)
    #: Responses that have sent all of their audio.
    finished: int = 0
    _runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/cognitiveservices/v1", self._handle)
        self._runner = await serve_on_loopback(app, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Ocp-Apim-Subscription-Key") != self.key:
            return web.Response(status=401)  # the service answers an empty 401
        if request.content_type != "application/ssml+xml":
            return web.Response(status=415)
        fmt = request.headers.get("X-Microsoft-OutputFormat", "")
        match = re.fullmatch(r"raw-(\w+)-16bit-mono-pcm", fmt)
        if not match or match.group(1) not in RATES:
            return web.Response(status=400, text=f"Unsupported output format: {fmt!r}")
        agent = request.headers.get("User-Agent", "")
        if not 0 < len(agent) < 255:
            return web.Response(status=400, text="User-Agent is required (< 255 chars)")
        try:
            synthesis = _parse(await request.text(), agent)
        except ValueError as exc:
            return web.Response(status=400, text=f"SSML is invalid: {exc}")
        if synthesis.voice not in self.voices:
            return web.Response(status=400, text=f"Unsupported voice {synthesis.voice}.")
        self.requests.append(synthesis)
        rate = RATES[match.group(1)]
        seconds = len(synthesis.text) * self.ms_per_char / 1000
        t = np.arange(round(seconds * rate)) / rate
        pcm = (8000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
        resp = web.StreamResponse(headers={"Content-Type": "audio/x-wav"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        step = rate * self.chunk_ms // 1000 * 2
        for i in range(0, len(pcm), step):
            await resp.write(pcm[i:i + step])
            if i == 0 and self.hold is not None:
                await self.hold.wait()
        self.finished += 1
        await resp.write_eof()
        return resp


def _parse(body: str, agent: str) -> Synthesis:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError(str(exc)) from None
    if root.tag not in ("speak", SSML_NS + "speak"):
        raise ValueError(f"the root element is {root.tag}, not speak")
    if root.get("version") != "1.0" or not root.get(XML_LANG):
        raise ValueError("speak needs version='1.0' and xml:lang")
    voices = [e for e in root if e.tag in ("voice", SSML_NS + "voice")]
    if len(voices) != 1 or not voices[0].get("name"):
        raise ValueError("one voice element with a name is expected")
    voice = voices[0]
    text = "".join(voice.itertext()).strip()
    if not text:
        raise ValueError("nothing to say")
    return Synthesis(voice.get("name", ""), voice.get(XML_LANG) or root.get(XML_LANG, ""),
                     text, agent)
