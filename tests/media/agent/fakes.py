"""Small stand-ins implementing the agent's interfaces (no mocks): a brain that says fixed
lines in order, and a voice that runs espeak-ng (the Klatt voice pocketsphinx understands)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from media.agent.interfaces import Brain, BrainEvent, Line, Voice, VoiceSpec
from signaling.protocol import AgentSpec


class LinesBrain:
    """Says ``lines[0]`` to start and the next line after each of the person's turns, streamed
    word by word; nothing on other events. Finished after the last line."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        self.said = 0
        self.events: list[BrainEvent] = []

    async def respond(self, history: Sequence[Line], event: BrainEvent) -> AsyncIterator[str]:
        self.events.append(event)
        if event.kind not in ("start", "turn") or self.said >= len(self.lines):
            return
        line = self.lines[self.said]
        self.said += 1
        for word in line.split():
            yield word + " "
            await asyncio.sleep(0)

    def expected(self) -> Sequence[str]:
        return ()

    @property
    def finished(self) -> bool:
        return self.said >= len(self.lines)

    async def aclose(self) -> None:
        return None


class EspeakTestVoice:
    """espeak-ng ``en-us+klatt2`` at 150 words/min, 22.05 kHz, in 20 ms chunks."""

    sample_rate = 22_050

    async def speak(self, text: str, voice: VoiceSpec) -> AsyncIterator[bytes]:
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng", "-v", "en-us+klatt2", "-s", "150", "--stdout", text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert proc.stdout is not None
        data = await proc.stdout.read()
        await proc.wait()
        pcm = data[44:]  # the WAV header espeak-ng writes to a pipe
        step = self.sample_rate // 50 * 2
        for i in range(0, len(pcm) - len(pcm) % 2, step):
            yield pcm[i : i + step]

    async def aclose(self) -> None:
        return None


def factory_of(brains: list[LinesBrain], lines: Sequence[str]):  # type: ignore[no-untyped-def]
    """An agent factory making a :class:`LinesBrain` of ``lines`` per room (kept in
    ``brains``) and an :class:`EspeakTestVoice`."""

    async def make(spec: AgentSpec) -> tuple[Brain, Voice, VoiceSpec]:
        brain = LinesBrain(lines)
        brains.append(brain)
        return brain, EspeakTestVoice(), VoiceSpec()

    return make
