"""Azure text to speech (the seed's default cloud voice provider), streaming.

A client of the Speech service's REST API (learn.microsoft.com, "Text to speech REST API"):
``POST {endpoint}/cognitiveservices/v1`` with an SSML body naming the voice and its language,
and the headers ``Ocp-Apim-Subscription-Key`` (the resource key), ``Content-Type:
application/ssml+xml``, ``X-Microsoft-OutputFormat`` and ``User-Agent`` (the application's
name, under 255 characters). A ``200`` body is the audio, sent as it is synthesised; with
``raw-24khz-16bit-mono-pcm`` (one of the *streaming* formats: the ``riff-`` ones are not) it
is headerless 24 kHz mono s16, yielded as it arrives. Other statuses: ``400`` (a missing or
invalid parameter, e.g. an unknown voice), ``401`` (bad key or region), ``415`` (wrong
Content-Type), ``429`` (quota), ``502``/``503`` (the service); each raises
:class:`AzureTtsError` with the status and what the service said.

Voices: the seed's ``voiceId`` when it is an Azure voice name (``en-US-JennyNeural``), else
the language's default neural voice (:data:`DEFAULT_VOICES`), with a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from xml.sax.saxutils import escape, quoteattr

import aiohttp

from .interfaces import VoiceError, VoiceSpec

logger = logging.getLogger(__name__)

OUTPUT_FORMAT = "raw-24khz-16bit-mono-pcm"
SAMPLE_RATE = 24_000
USER_AGENT = "connvo-rtc-agent"
#: A language's voice when the voice id is not an Azure voice (prebuilt neural voices).
DEFAULT_VOICES = {
    "en-US": "en-US-JennyNeural", "en-GB": "en-GB-SoniaNeural", "en-AU": "en-AU-NatashaNeural",
    "de-DE": "de-DE-KatjaNeural", "fr-FR": "fr-FR-DeniseNeural", "es-ES": "es-ES-ElviraNeural",
    "es-MX": "es-MX-DaliaNeural", "it-IT": "it-IT-ElsaNeural", "pt-BR": "pt-BR-FranciscaNeural",
    "pt-PT": "pt-PT-RaquelNeural", "nl-NL": "nl-NL-ColetteNeural", "ja-JP": "ja-JP-NanamiNeural",
    "zh-CN": "zh-CN-XiaoxiaoNeural", "ko-KR": "ko-KR-SunHiNeural", "pl-PL": "pl-PL-ZofiaNeural",
}
#: Languages by name (the seed's ``language`` default is "English").
LOCALES = {
    "english": "en-US", "german": "de-DE", "french": "fr-FR", "spanish": "es-ES",
    "italian": "it-IT", "portuguese": "pt-BR", "dutch": "nl-NL", "japanese": "ja-JP",
    "chinese": "zh-CN", "mandarin": "zh-CN", "korean": "ko-KR", "polish": "pl-PL",
}
#: An Azure voice's short name: locale, then a name ("en-US-JennyNeural",
#: "en-US-JennyMultilingualNeural", "zh-CN-henan-YundengNeural").
VOICE_NAME = re.compile(r"^([a-z]{2,3}-[A-Z]{2})(-[A-Za-z]+)*-[A-Za-z0-9]+$")
_MAX_ERROR_BODY = 2048


class AzureTtsError(VoiceError):
    """The Speech service refused or failed (the message has the HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def locale(language: str) -> str:
    """A BCP 47 locale for the seed's language (a name or a tag); ``en-US`` when unknown."""
    key = language.strip()
    if key.lower() in LOCALES:
        return LOCALES[key.lower()]
    parts = key.replace("_", "-").split("-")
    if re.fullmatch(r"[A-Za-z]{2,3}", parts[0]):
        if len(parts) >= 2 and re.fullmatch(r"[A-Za-z]{2}", parts[-1]):
            return f"{parts[0].lower()}-{parts[-1].upper()}"
        base = parts[0].lower()
        found = sorted(loc for loc in DEFAULT_VOICES if loc.startswith(base + "-"))
        if found:
            return found[0]
    logger.info("azure tts: language %r is not known; speaking en-US", language)
    return "en-US"


def voice_for(spec: VoiceSpec) -> tuple[str, str]:
    """``(voice name, xml:lang)`` for the seed's voice id and language."""
    voice_id = spec.voice_id.strip()
    match = VOICE_NAME.match(voice_id)
    if match:
        return voice_id, match.group(1)
    lang = locale(spec.language)
    name = DEFAULT_VOICES.get(lang, "en-US-JennyMultilingualNeural")
    if voice_id:
        logger.info("azure tts: voice id %r is not an Azure voice name; using %s", voice_id,
                    name)
    return name, lang


def ssml(text: str, name: str, lang: str) -> str:
    """The request body: ``text`` (escaped) spoken by voice ``name`` in ``lang``."""
    return (f"<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' "
            f"xml:lang={quoteattr(lang)}><voice xml:lang={quoteattr(lang)} "
            f"name={quoteattr(name)}>{escape(text)}</voice></speak>")


class AzureVoice:
    """The :class:`~media.agent.interfaces.Voice` of Azure text to speech.

    ``endpoint``: the region's text-to-speech endpoint
    (``https://westeurope.tts.speech.microsoft.com``); ``key``: the Speech resource key.
    ``read_timeout_s`` bounds every wait for audio (the first included).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, *, endpoint: str, key: str, connect_timeout_s: float = 3.0,
                 read_timeout_s: float = 5.0, user_agent: str = USER_AGENT) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"Azure endpoint {endpoint!r} must be http(s)://")
        if not key:
            raise ValueError("the Azure Speech resource key is empty")
        if not 0 < len(user_agent) < 255:
            raise ValueError("User-Agent must be 1..254 characters")
        self.url = endpoint.rstrip("/") + "/cognitiveservices/v1"
        self._key = key
        self._user_agent = user_agent
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s,
                                              sock_read=read_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def speak(self, text: str, voice: VoiceSpec) -> AsyncIterator[bytes]:
        """``text`` as 24 kHz mono s16 PCM chunks as the service sends them."""
        if self._closed:
            raise AzureTtsError("the voice is closed")
        text = " ".join(text.split())
        if not text:
            return
        name, lang = voice_for(voice)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Ocp-Apim-Subscription-Key": self._key,
                   "Content-Type": "application/ssml+xml",
                   "X-Microsoft-OutputFormat": OUTPUT_FORMAT,
                   "User-Agent": self._user_agent}
        try:
            async with self._session.post(self.url, data=ssml(text, name, lang).encode(),
                                          headers=headers) as resp:
                if resp.status != 200:
                    raise AzureTtsError(f"Azure text to speech ({name}): HTTP {resp.status} "
                                        f"{resp.reason}: {await _error_text(resp)}",
                                        resp.status)
                odd = b""
                async for chunk in resp.content.iter_any():
                    chunk = odd + chunk
                    cut = len(chunk) & ~1
                    odd = chunk[cut:]
                    if cut:
                        yield chunk[:cut]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AzureTtsError(f"Azure text to speech ({name}): "
                                f"{str(exc) or type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    body = (await resp.content.read(_MAX_ERROR_BODY)).decode("utf-8", errors="replace")
    return " ".join(body.split())[:300] or "(no body)"
