"""The agent in the server peer: what a :class:`~media.tap.session.TapSession` adds when its
job carries an :class:`~signaling.protocol.AgentSpec`.

The session joins with the job's ``agent`` token (a visible participant with the persona's
name and a seat), sends :attr:`AgentPart.audio` to every participant (one track per
connection, one encoder for all), and hears every participant through its own speaker
pipelines, whose segment edges and finals this part turns into the conversation's inputs
(:class:`~media.agent.conversation.Conversation`). The agent's own lines go to the hub as
``transcript`` frames naming the agent's peer, so the room's transcript holds both sides.

The brain and the voice come from an :data:`AgentFactory` (``media.agent.factory`` by
default), made once per room.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from media.tap.config import TapConfig
from signaling import protocol

from .conversation import Conversation
from .interfaces import Brain, Voice, VoiceSpec
from .outgoing import OutgoingAudio

if TYPE_CHECKING:
    from signaling.scenarios import Scenario

logger = logging.getLogger(__name__)

#: Makes the brain and the voice of one room's agent, and says which voice speaks.
AgentFactory = Callable[[protocol.AgentSpec], Awaitable[tuple[Brain, Voice, VoiceSpec]]]


@dataclass(frozen=True)
class AgentTuning:
    """How the agent listens and speaks (plain values; defaults measured in docs/agent.md)."""

    speech_start_s: float = 0.09
    """The segmenter's onset window in agent rooms, seconds (the tap's default is 0.3 s): a
    barge-in must stop the agent within 200 ms of the person's first word, and the onset is
    what triggers it (``speech_ratio`` of this window voiced: 2 of 3 frames of 30 ms, so the
    agent stops about 60-80 ms after the first word reaches it; docs/agent.md)."""
    speech_end_s: float = 0.35
    """The segmenter's hang-over in agent rooms, seconds: silence that ends a turn. Shorter
    answers sooner; too short cuts a person off at a pause."""
    silence_s: float = 12.0
    """Seconds of silence after the agent's line before the brain is told (``silence``)."""
    bitrate: int = 32_000
    """The agent's Opus bitrate, bit/s."""


def tuned(config: TapConfig, tuning: AgentTuning) -> TapConfig:
    """``config`` with the agent's segmentation (onset window and hang-over)."""
    return dataclasses.replace(config, speech_start_s=tuning.speech_start_s,
                               speech_end_s=tuning.speech_end_s)


def agent_factory_for(settings: Mapping[str, Any]) -> AgentFactory:
    """The deployment's agents (:mod:`media.agent.factory`): ``settings`` are the ``[agent]``
    settings' fields (:class:`~signaling.settings.AgentSettings`; empty: its defaults). The
    scenarios are loaded (and checked) at the first room with an agent; a meeting naming a
    scenario this worker does not have fails that room's job with the reason logged."""
    from signaling.settings import AgentSettings

    from . import factory

    agent_settings = AgentSettings(**settings)
    loaded: dict[str, Scenario] = {}

    async def make(spec: protocol.AgentSpec) -> tuple[Brain, Voice, VoiceSpec]:
        if not loaded:
            loaded.update(await asyncio.to_thread(factory.scenarios, agent_settings))
        scenario = loaded.get(spec.scenario_id)
        if scenario is None:
            raise ValueError(f"no scenario {spec.scenario_id!r} in this worker's "
                             f"agent.scenarios_dir")
        return (factory.make_brain(agent_settings, scenario, spec),
                factory.make_voice(agent_settings), factory.voice_spec(scenario, spec))

    return make


class AgentPart:
    """The agent's share of a server peer in one room (see the module docstring)."""

    def __init__(self, spec: protocol.AgentSpec, brain: Brain, voice: Voice,
                 voice_spec: VoiceSpec, *,
                 send: Callable[[protocol.TranscriptIn], None], zero_ms: int,
                 tuning: AgentTuning | None = None, log: str = "") -> None:
        self.spec = spec
        self.tuning = tuning or AgentTuning()
        self._send = send
        self._zero_ms = zero_ms
        self._log = log
        #: The one outgoing audio stream (a source of one track per connection).
        self.audio = OutgoingAudio(bitrate=self.tuning.bitrate, name=log)
        self.peer_id = ""
        self.conversation = Conversation(
            brain, voice, voice_spec, self.audio, on_line=self._line, welcome=spec.welcome_message,
            silence_s=self.tuning.silence_s, log=log)

    def joined(self, peer_id: str) -> None:
        """The server peer is in the room as ``peer_id``: start the outgoing stream."""
        self.peer_id = peer_id
        self.audio.start()

    def person_connected(self) -> None:
        """A person's media flows (their audio arrived or their connection is up)."""
        self.conversation.begin()

    def edge(self, peer_id: str, event: str, segment_id: str, time_s: float) -> None:
        if event == "start":
            self.conversation.speech_started(peer_id, segment_id, time_s)
        else:
            self.conversation.speech_ended(peer_id, segment_id, time_s)

    def final(self, peer_id: str, segment_id: str, text: str, name: str) -> None:
        self.conversation.final(peer_id, segment_id, text, name)

    def tick(self) -> None:
        self.conversation.tick()

    def _line(self, segment_id: str, text: str, interrupted: bool, start_s: float,
              end_s: float) -> None:
        if not self.peer_id:
            return
        start_ms = max(0, round(start_s * 1000) - self._zero_ms)
        end_ms = max(start_ms, round(end_s * 1000) - self._zero_ms)
        try:
            self._send(protocol.TranscriptIn(
                peer_id=self.peer_id, segment_id=segment_id, text=text[:4000], final=True,
                start_ms=start_ms, end_ms=end_ms, interrupted=interrupted))
        except Exception as exc:  # noqa: BLE001 - the socket is gone: the line is lost
            logger.warning("%s agent line not sent: %r", self._log, exc)

    async def aclose(self) -> None:
        """Stop speaking, close the brain, the voice and the stream (idempotent)."""
        await self.conversation.aclose()
        await self.audio.aclose()
