"""The agent's contract: brains, voices and the conversation's lines.

A **brain** turns the conversation so far and one event into a stream of text; the agent
speaks it sentence by sentence as it streams (``sentences`` cuts the stream). A **voice**
turns one piece of text into a stream of 16-bit mono PCM at its own ``sample_rate``; the
agent resamples to 48 kHz once and sends the same encoded frames to every participant.

Implementations: ``media.agent.script`` (the embedded brain: the scenario's scripted steps),
``media.agent.llm`` (an OpenAI-compatible chat-completions client, streaming),
``media.agent.espeak`` (the embedded voice) and ``media.agent.azure_tts`` (Azure's
text-to-speech REST API, streaming). ``media.agent.factory`` builds them from settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

#: Who said a line of the conversation.
Speaker = Literal["agent", "person"]

#: Cloud voice providers named by the seed (``voiceProvider``); ``azure`` is its default.
VoiceProvider = Literal["elevenlabs", "azure", "cartesia"]


@dataclass(frozen=True)
class Line:
    """One line of the conversation, as the brain sees its history."""

    speaker: Speaker
    text: str
    #: The agent's line was cut off by the person (barge-in): ``text`` is what was said of
    #: it, as far as the agent got.
    interrupted: bool = False
    #: The person's name (``speaker == "person"``), when the room knows it.
    name: str = ""


@dataclass(frozen=True)
class BrainEvent:
    """What the brain is asked to respond to.

    ``start``: the meeting began (the welcome message is spoken; ``text`` is the welcome
    message the meeting was created with, or empty for the scenario's own).
    ``turn``: the person finished a turn; ``text`` is its final transcript.
    ``silence``: the person has said nothing for a while after the agent's last line.
    ``interrupted``: the person barged in; the brain may note it (usually yields nothing).
    """

    kind: Literal["start", "turn", "silence", "interrupted"]
    text: str = ""


class Brain(Protocol):
    def respond(self, history: Sequence[Line], event: BrainEvent) -> AsyncIterator[str]:
        """The agent's reply as a stream of text chunks (any size, down to single tokens).
        An empty stream: the agent says nothing."""

    def expected(self) -> Sequence[str]:
        """Phrases the person is expected to say next (the scripted step's answers), to
        constrain or bias recognition while the agent waits for them; empty when free."""

    @property
    def finished(self) -> bool:
        """The conversation reached its end (the agent has said its last line)."""

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class VoiceSpec:
    """Which voice speaks: the seed's ``voiceId``/``voiceProvider``/``language``."""

    voice_id: str = ""
    provider: VoiceProvider = "azure"
    #: The seed's language, a name ("English") or a BCP 47 tag ("en-US").
    language: str = "English"


class VoiceError(RuntimeError):
    """A voice could not speak a line (not installed, the service refused, a broken
    stream); the message says why. The agent logs it and goes on without that line."""


class Voice(Protocol):
    #: Samples per second of the PCM ``speak`` yields.
    sample_rate: int

    def speak(self, text: str, voice: VoiceSpec) -> AsyncIterator[bytes]:
        """``text`` spoken as 16-bit signed little-endian mono PCM chunks (whole samples),
        the first as soon as the voice has any. Raises :class:`VoiceError` when it cannot;
        closing the stream early stops the synthesis (barge-in)."""

    async def aclose(self) -> None: ...


def sentences(buffer: str, *, final: bool = False) -> tuple[list[str], str]:
    """Cut complete sentences off the front of streamed text: ``(sentences, rest)``.
    A sentence ends at ``.``, ``!``, ``?`` or ``…`` followed by white space (or the end of
    the stream when ``final``); ``rest`` waits for more text."""
    out: list[str] = []
    start = 0
    i = 0
    while i < len(buffer):
        ch = buffer[i]
        if ch in ".!?…":
            j = i + 1
            while j < len(buffer) and buffer[j] in ".!?…\"')”’":
                j += 1
            if j < len(buffer) and buffer[j].isspace():
                piece = buffer[start:j].strip()
                if piece:
                    out.append(piece)
                start = j
                i = j
                continue
        i += 1
    rest = buffer[start:]
    if final and rest.strip():
        out.append(rest.strip())
        rest = ""
    return out, rest.lstrip() if out else rest
