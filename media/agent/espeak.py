"""The embedded voice: espeak-ng (Debian package ``espeak-ng``) streaming PCM.

One ``espeak-ng --stdout`` process per line: the text goes in on stdin, the WAV comes out on
stdout as espeak-ng synthesises it (clause by clause), and :meth:`EspeakVoice.speak` yields
its PCM as it arrives (22050 Hz mono s16; the header's sizes are placeholders when streaming,
so the header is parsed up to the ``data`` chunk and the rest is taken as it comes). When the
consumer stops early (barge-in) the generator's cleanup kills espeak-ng at once.

Voices: the seed's ``voiceId`` when it is an espeak-ng voice (``en-us``, ``de``,
``en-us+klatt2``: a language and optionally a ``+variant``), else the language's voice: a
name ("English", "German", "French (France)") or a BCP 47 tag ("en-US", "de-DE"), with the
``variant`` (default ``klatt2``: pocketsphinx recognises espeak-ng's Klatt variants far better
than its default voice, which matters when the agent's lines are transcribed). A voice id
that espeak-ng does not have (an ElevenLabs or Azure id) falls back to the language's voice,
with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

from .interfaces import VoiceError, VoiceSpec

logger = logging.getLogger(__name__)

BINARY = "espeak-ng"
#: espeak-ng's output rate (every voice).
SAMPLE_RATE = 22_050
DEFAULT_VARIANT = "klatt2"
DEFAULT_RATE = 150
#: Words per minute espeak-ng accepts (``-s``).
RATE_RANGE = (80, 450)
#: Common language names that do not name one espeak-ng voice on their own.
_NAMES = {"english": "en-us", "american english": "en-us", "british english": "en-gb",
          "french": "fr-fr", "portuguese": "pt", "brazilian portuguese": "pt-br",
          "spanish": "es", "chinese": "cmn", "mandarin": "cmn"}
_READ = 4096
_VOICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}(\+[A-Za-z0-9_-]{1,40})?$")


class EspeakError(VoiceError):
    """espeak-ng is missing or failed (the message says how)."""


@dataclass(frozen=True)
class Catalogue:
    """The voices this machine's espeak-ng has."""

    #: Language code (``en-us``) -> espeak-ng's voice name (``English_(America)``).
    languages: Mapping[str, str]
    #: Variant file names (``klatt2``, ``f3``, ``Alex``), lower case -> as written.
    variants: Mapping[str, str]


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """espeak-ng's languages and variants (``espeak-ng --voices``), read once."""
    if shutil.which(BINARY) is None:
        raise EspeakError(f"{BINARY} is not installed (Debian package espeak-ng)")

    def rows(arg: str) -> list[list[str]]:
        out = subprocess.run([BINARY, arg], capture_output=True, text=True, check=True,
                             timeout=10).stdout
        return [line.split() for line in out.splitlines()[1:] if len(line.split()) >= 5]

    languages = {r[1].lower(): r[3] for r in rows("--voices")}
    variants = {r[4].rsplit("/", 1)[-1].lower(): r[4].rsplit("/", 1)[-1]
                for r in rows("--voices=variant")}
    return Catalogue(languages, variants)


def language_voice(language: str, cat: Catalogue) -> str | None:
    """The espeak-ng language for a language name or BCP 47 tag (``None``: none fits)."""
    key = " ".join(language.strip().lower().replace("_", " ").split())
    if not key:
        return None
    tag = key.replace(" ", "-")
    if key in _NAMES:
        return _NAMES[key]
    if tag in cat.languages:
        return tag
    primary = tag.split("-", 1)[0]
    if "-" in tag and primary in cat.languages:
        return primary
    if "-" in tag and len(primary) <= 3:  # "fr-ca": a sibling of the same language
        kin = sorted(c for c in cat.languages if c.startswith(primary + "-"))
        if kin:
            return kin[0]
    by_name = {" ".join(name.lower().replace("_", " ").split()): code
               for code, name in cat.languages.items()}
    if key in by_name:
        return by_name[key]
    plain = sorted(code for name, code in by_name.items() if name.startswith(key + " ("))
    return plain[0] if plain else None


def resolve(spec: VoiceSpec, *, variant: str = DEFAULT_VARIANT,
            cat: Catalogue | None = None) -> str:
    """The espeak-ng voice (``-v``) for the seed's voice id and language."""
    cat = cat or catalogue()
    voice_id = spec.voice_id.strip()
    if voice_id:
        lang, _, var = voice_id.partition("+")
        if _VOICE_ID.match(voice_id) and lang.lower() in cat.languages \
                and (not var or var.lower() in cat.variants):
            return lang.lower() + "+" + (cat.variants[var.lower()] if var else variant)
        logger.info("espeak: voice id %r is not an espeak-ng voice; using the language's "
                    "(%s)", voice_id, spec.language)
    lang_voice = language_voice(spec.language, cat)
    if lang_voice is None:
        logger.warning("espeak: no espeak-ng voice for language %r; speaking English",
                       spec.language)
        lang_voice = "en-us"
    return f"{lang_voice}+{variant}" if variant else lang_voice


class EspeakVoice:
    """The :class:`~media.agent.interfaces.Voice` of espeak-ng, one process per line.

    ``rate``: words per minute; ``variant``: the espeak-ng variant used when the voice id
    does not name one (empty: espeak-ng's default voice).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, *, rate: int = DEFAULT_RATE, variant: str = DEFAULT_VARIANT) -> None:
        if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
            raise ValueError(f"espeak rate {rate} is outside {RATE_RANGE[0]}..{RATE_RANGE[1]} "
                             "words per minute")
        cat = catalogue()
        if variant and variant.lower() not in cat.variants:
            raise ValueError(f"espeak variant {variant!r} is not installed")
        self.rate = rate
        self.variant = cat.variants[variant.lower()] if variant else ""
        self._procs: set[asyncio.subprocess.Process] = set()
        self._closed = False

    async def speak(self, text: str, voice: VoiceSpec) -> AsyncIterator[bytes]:
        """``text`` as 22050 Hz mono s16 PCM chunks, the first as soon as espeak-ng writes
        it. Closing the generator early kills espeak-ng."""
        if self._closed:
            raise EspeakError("the voice is closed")
        text = " ".join(text.split())
        if not text:
            return
        name = resolve(voice, variant=self.variant)
        proc = await asyncio.create_subprocess_exec(
            BINARY, "--stdout", "-v", name, "-s", str(self.rate),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        self._procs.add(proc)
        try:
            assert proc.stdin and proc.stdout and proc.stderr
            proc.stdin.write(text.encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
            proc.stdin.close()
            try:
                await _skip_header(proc.stdout)
            except (EspeakError, asyncio.IncompleteReadError) as exc:
                await proc.wait()
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                raise EspeakError(f"espeak-ng -v {name}: {exc or 'truncated WAV header'} "
                                  f"(exit {proc.returncode}: {err[:300]})") from None
            odd = b""
            while chunk := await proc.stdout.read(_READ):
                chunk = odd + chunk
                cut = len(chunk) & ~1
                odd = chunk[cut:]
                if cut:
                    yield chunk[:cut]
            code = await proc.wait()
            if code != 0:
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                raise EspeakError(f"espeak-ng -v {name} exited with {code}: {err[:300]}")
        finally:
            if proc.returncode is None:
                proc.kill()  # barge-in / consumer gone: stop synthesising now
                await proc.wait()
            self._procs.discard(proc)

    @property
    def running(self) -> list[int]:
        """PIDs of espeak-ng processes speaking now."""
        return [p.pid for p in self._procs]

    async def aclose(self) -> None:
        """Kill every espeak-ng still speaking (idempotent)."""
        self._closed = True
        for proc in list(self._procs):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._procs.clear()


async def _skip_header(stream: asyncio.StreamReader) -> None:
    """Read a RIFF/WAVE header up to the start of its ``data`` chunk's samples; check it is
    22050 Hz mono s16 (as espeak-ng always writes)."""
    try:
        riff = await stream.readexactly(12)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EspeakError("espeak-ng wrote no audio") from None
        raise EspeakError("espeak-ng wrote a truncated WAV header") from None
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise EspeakError("espeak-ng's output is not a WAV")
    while True:
        head = await stream.readexactly(8)
        kind, size = head[:4], struct.unpack("<I", head[4:])[0]
        if kind == b"data":
            return
        body = await stream.readexactly(size + (size & 1))
        if kind == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if (fmt, channels, rate, bits) != (1, 1, SAMPLE_RATE, 16):
                raise EspeakError(f"espeak-ng wrote format {fmt}, {channels} channel(s), "
                                  f"{rate} Hz, {bits} bits; expected PCM mono "
                                  f"{SAMPLE_RATE} Hz 16 bits")

