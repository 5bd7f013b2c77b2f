"""Support code for tests and benchmarks of the agent: a person made of an aiortc peer.

:class:`PersonBot` joins a room, speaks clips on demand (through the same one-encoder outgoing
stream the agent uses, so it knows to the frame when its first and last voiced samples went
out) and keeps everything it hears from the agent with arrival times, for pocketsphinx (what
the agent said) and for timing (when the agent's audio started and fell silent).
"""

from __future__ import annotations

import asyncio
import time
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import av

from media.agent.outgoing import OutgoingAudio, Resampler48
from media.config import PeerClientConfig
from media.peer import PeerClient
from media.sources import SourceSpec, decode_audio_file
from media.tap.pipeline import Resampler

#: Peak (s16) above which a 30 ms frame of the agent's audio counts as sound (about -40 dBFS):
#: Opus' decoded silence is far below it.
LOUD = 330


@dataclass
class Heard:
    """One frame (20 ms) of the agent's audio as the bot received it."""

    arrived: float
    """Unix time it arrived (decoded)."""
    pcm: bytes
    """16 kHz mono s16."""
    peak: int


@dataclass(frozen=True)
class Clip:
    """Speech to say: 48 kHz mono s16, and where its voice starts and ends (seconds)."""

    pcm: bytes
    onset_s: float
    offset_s: float

    @classmethod
    def from_file(cls, path: str | Path) -> Clip:
        pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in decode_audio_file(str(path)))
        samples = array("h", pcm)
        loud = [i for i in range(0, len(samples), 480)
                if max(abs(x) for x in samples[i : i + 480]) > LOUD]
        if not loud:
            raise ValueError(f"{path}: no speech in it")
        return cls(pcm, loud[0] / 48_000, (loud[-1] + 480) / 48_000)


@dataclass(frozen=True)
class Said:
    """When the bot's voice went out: its first and last voiced samples (unix seconds)."""

    onset: float
    end: float


class PersonBot:
    """A person in an agent's room (see the module docstring). ``async with`` joins and
    leaves."""

    def __init__(self, ws_url: str, token: str, *,
                 pin_host_addresses: Sequence[str] | None = ("127.0.0.1",)) -> None:
        self.audio = OutgoingAudio(name="bot")
        self.client = PeerClient(
            PeerClientConfig(ws_url=ws_url, token=token, audio=SourceSpec(self.audio),
                             pin_host_addresses=tuple(pin_host_addresses or ()) or None,
                             ice_timeout_s=10.0, name="person"),
            on_audio_frame=self._on_frame)
        self.heard: list[Heard] = []
        self._resamplers: dict[str, Resampler] = {}
        self.agent_peer: str | None = None

    async def __aenter__(self) -> Self:
        await self.client.connect()
        self.audio.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.audio.aclose()
        await self.client.aclose()

    # ------------------------------------------------------------------ speaking

    async def say(self, clip: Clip) -> Said:
        """Speak ``clip``; return (once it has gone out) when its voice started and ended."""
        await self.audio.wait_idle()
        self.audio.play(clip.pcm)  # speech_started_at is set as its first frame goes out
        await self.audio.wait_idle()
        started = self.audio.speech_started_at or time.time()
        return Said(started + clip.onset_s, started + clip.offset_s)

    def start_saying(self, clip: Clip) -> asyncio.Task[Said]:
        """:meth:`say` in a task (to speak over the agent)."""
        return asyncio.get_running_loop().create_task(self.say(clip), name="bot says")

    # ------------------------------------------------------------------ hearing

    def _on_frame(self, peer_id: str, frame: av.AudioFrame) -> None:
        info = self.client.room_peers.get(peer_id)
        if info is None or info.role != "agent":
            return
        self.agent_peer = peer_id
        resampler = self._resamplers.setdefault(peer_id, Resampler())
        pcm = resampler.resample(frame)  # 20 ms as received: its arrival time is exact
        if pcm:
            samples = array("h", pcm)
            self.heard.append(Heard(time.time(), pcm, max(max(samples), -min(samples))))

    def loud_after(self, t: float) -> Heard | None:
        return next((h for h in self.heard if h.arrived > t and h.peak > LOUD), None)

    async def agent_speech(self, after: float, *, timeout: float = 20.0) -> float:
        """When the agent's audio, after ``after``, first arrived loud (unix s)."""
        async with asyncio.timeout(timeout):
            while (first := self.loud_after(after)) is None:
                await asyncio.sleep(0.01)
        return first.arrived

    async def agent_quiet(self, after: float, *, quiet_s: float = 1.0,
                          timeout: float = 60.0) -> float:
        """Wait until the agent's audio has been quiet for ``quiet_s`` (after ``after``);
        return when its last loud frame arrived."""
        async with asyncio.timeout(timeout):
            while True:
                last = next((h for h in reversed(self.heard)
                             if h.arrived > after and h.peak > LOUD), None)
                mark = last.arrived if last is not None else after
                if self.heard and self.heard[-1].arrived - mark >= quiet_s:
                    return mark
                await asyncio.sleep(0.02)

    def fell_silent(self, after: float, *, quiet_s: float = 0.3) -> float | None:
        """When the agent's audio fell silent after ``after``: the arrival of its last loud
        frame before the first ``quiet_s`` of quiet frames (``None``: it never did)."""
        last = after
        for heard in self.heard:
            if heard.arrived <= after:
                continue
            if heard.peak > LOUD:
                last = heard.arrived
            elif heard.arrived - last >= quiet_s:
                return last
        return None

    def pcm_between(self, start: float, end: float) -> bytes:
        """The agent's audio (16 kHz mono s16) that arrived between two times."""
        return b"".join(h.pcm for h in self.heard if start <= h.arrived <= end)


def write_wav(pcm16k: bytes, path: Path) -> Path:
    """16 kHz mono s16 to a WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(pcm16k)
    return path


def resample_to_48k(pcm: bytes, rate: int) -> bytes:
    """Mono s16 at ``rate`` -> 48 kHz."""
    resampler = Resampler48(rate)
    return resampler.resample(pcm) + resampler.flush()
