"""The agent's side of the conversation: when to speak, what to say, when to stop.

:class:`Conversation` sits between the server peer's ears (the tap's per-speaker pipelines:
segment edges and final transcripts) and its mouth (:class:`~media.agent.outgoing.OutgoingAudio`).

- **Welcome.** :meth:`Conversation.begin` (the first person is in the room and connected) asks
  the brain for its ``start`` response: the welcome message, spoken before anything else.
- **End of turn.** The person's turn ends when every segment they started has ended (the
  segmenter's end of speech, after its hang-over) *and* its final transcript has arrived; the
  finals of the turn, joined, go to the brain as a ``turn`` event. A segment that starts again
  before the final arrives keeps the turn open (a pause mid-sentence is not a turn).
- **Speaking.** The brain's text streams through :func:`~media.agent.interfaces.sentences`;
  each sentence goes to the voice as soon as it is complete, its PCM is resampled once to
  48 kHz and queued on the outgoing audio (encoded once for every participant). The line is
  stored (``transcript`` from the agent, speaker = the agent) when its audio has gone out.
- **Barge-in.** A segment onset (not its final) while the agent speaks or is about to:
  the reply is cancelled, the queued audio dropped (:meth:`OutgoingAudio.clear`), the line
  stored ``interrupted`` with what was said of it (the sentences played, and of the sentence
  cut off the share of its words its played audio covers), and the brain told
  (``interrupted`` event). A reply cancelled before any of it was heard stores nothing; the
  person's words of that turn are kept for their next turn.
- **Silence.** Nobody has said anything for ``silence_s`` after the agent's last line: the
  brain gets a ``silence`` event (once per line).

Every response records its :class:`TurnTimes` (unix seconds) for ``bench/agent.py``: the
person's end of speech, the segment's end (hang-over done), the final, the brain's first text,
the voice's first audio, and the first frame of it sent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .interfaces import Brain, BrainEvent, Line, Voice, VoiceSpec, sentences
from .outgoing import OutgoingAudio, Resampler48

logger = logging.getLogger(__name__)

#: How a finished (or interrupted) agent line leaves: ``(segment_id, text, interrupted,
#: start_s, end_s)``, times unix seconds.
LineSink = Callable[[str, str, bool, float, float], None]


@dataclass
class TurnTimes:
    """One agent response and when each step of it happened (unix seconds; ``None``: did not
    happen, e.g. the welcome has no person's turn before it)."""

    kind: str
    heard: str = ""
    speech_end: float | None = None
    """The person's last voiced frame (media clock)."""
    segment_end: float | None = None
    """The segmenter ended the segment (its hang-over passed)."""
    final: float | None = None
    """The final transcript of the turn's last segment arrived."""
    first_text: float | None = None
    first_audio: float | None = None
    first_sent: float | None = None
    said: str = ""
    interrupted: bool = False


@dataclass
class _Sentence:
    text: str
    tag: tuple[str, int]
    samples: int = 0
    complete: bool = False


@dataclass
class _Reply:
    """The response being spoken."""

    segment_id: str
    times: TurnTimes
    sentences: list[_Sentence] = field(default_factory=list)
    started_at: float | None = None


class Conversation:
    """One agent's conversation in one room. Feed it :meth:`begin`, :meth:`speech_started`,
    :meth:`speech_ended`, :meth:`final`, :meth:`tick`; :meth:`aclose` (idempotent)."""

    def __init__(self, brain: Brain, voice: Voice, voice_spec: VoiceSpec, audio: OutgoingAudio,
                 *, on_line: LineSink, welcome: str = "", silence_s: float = 12.0,
                 log: str = "") -> None:
        self.brain = brain
        self.voice = voice
        self.voice_spec = voice_spec
        self.audio = audio
        self.welcome = welcome
        self.silence_s = silence_s
        self._on_line = on_line
        self._log = log
        #: The conversation so far, as the brain sees it.
        self.history: list[Line] = []
        #: Every response's timings (the latest 1,000).
        self.turns: deque[TurnTimes] = deque(maxlen=1000)
        #: Barge-ins: (the person's first voiced frame, the agent stopped), unix s.
        self.barge_ins: deque[tuple[float, float]] = deque(maxlen=1000)
        self._began = False
        self._closed = False
        self._reply: _Reply | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._noting: asyncio.Task[None] | None = None
        self._open: set[tuple[str, str]] = set()  # (peer, segment) started, not ended
        self._awaiting: dict[tuple[str, str], float] = {}  # ended, no final yet: segment end
        self._turn: list[str] = []
        self._turn_times = TurnTimes("turn")
        self._last_activity = time.monotonic()
        self._silence_told = True  # nothing to prompt before the agent said anything

    # ------------------------------------------------------------------ inputs

    @property
    def began(self) -> bool:
        return self._began

    @property
    def replying(self) -> bool:
        """A response is being prepared or spoken (not one cancelled by a barge-in)."""
        return self._reply is not None

    def begin(self) -> None:
        """The first person is here and connected: speak the welcome (once)."""
        if self._began or self._closed:
            return
        self._began = True
        logger.info("%s conversation begins", self._log)
        self._respond(BrainEvent("start", self.welcome), TurnTimes("start"))

    def speech_started(self, peer_id: str, segment_id: str, onset_s: float | None = None
                       ) -> None:
        """A person's segment began (the segmenter's onset; ``onset_s`` its first voiced
        frame, unix s): a barge-in if the agent speaks."""
        self._open.add((peer_id, segment_id))
        self._last_activity = time.monotonic()
        if self.replying and self._barge_in():
            now = time.time()
            self.barge_ins.append((onset_s if onset_s is not None else now, now))

    def speech_ended(self, peer_id: str, segment_id: str, end_s: float) -> None:
        """A person's segment ended (end of speech after the hang-over)."""
        key = (peer_id, segment_id)
        if key not in self._open:
            return
        self._open.discard(key)
        self._awaiting[key] = end_s
        self._turn_times.speech_end = end_s
        self._turn_times.segment_end = time.time()
        self._last_activity = time.monotonic()

    def final(self, peer_id: str, segment_id: str, text: str, name: str = "") -> None:
        """A segment's final transcript (after its end; empty when nothing was recognised)."""
        key = (peer_id, segment_id)
        self._open.discard(key)
        self._awaiting.pop(key, None)
        self._last_activity = time.monotonic()
        text = text.strip()
        if text:
            self._turn.append(text)
            self._turn_times.final = time.time()
            self.history.append(Line("person", text, name=name))
        if self._open or self._awaiting or not self._turn or self._closed:
            return
        if not self._began:
            # The person spoke before the welcome went out: the welcome first.
            self.begin()
            return
        heard = " ".join(self._turn)
        times, self._turn_times = self._turn_times, TurnTimes("turn")
        times.heard = heard
        self._turn = []
        self._respond(BrainEvent("turn", heard), times)

    def tick(self) -> None:
        """Called every half second or so: prompts after a long silence."""
        if self._closed or not self._began or self.replying or self._open or self._awaiting \
                or self._silence_told or self.brain.finished:
            return
        if time.monotonic() - self._last_activity >= self.silence_s:
            self._silence_told = True
            self._respond(BrainEvent("silence"), TurnTimes("silence"))

    # ------------------------------------------------------------------ speaking

    def _respond(self, event: BrainEvent, times: TurnTimes) -> None:
        reply = _Reply("agent_" + secrets.token_hex(6), times)
        self._reply = reply
        self._reply_task = asyncio.get_running_loop().create_task(
            self._speak(event, reply), name=f"agent reply {self._log}")

    async def _speak(self, event: BrainEvent, reply: _Reply) -> None:
        if self._noting is not None:  # the brain hears of the barge-in before the next turn
            await asyncio.gather(self._noting, return_exceptions=True)
        times = reply.times
        buffer = ""
        try:
            async for chunk in self.brain.respond(list(self.history), event):
                if times.first_text is None:
                    times.first_text = time.time()
                buffer += chunk
                done, buffer = sentences(buffer)
                for text in done:
                    await self._say(reply, text)
            done, _ = sentences(buffer, final=True)
            for text in done:
                await self._say(reply, text)
            await self.audio.wait_idle()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s reply failed", self._log)
            self.audio.clear()
        said = " ".join(s.text for s in reply.sentences if s.complete)
        if self._reply is reply:
            self._reply = None
        self._finish(reply, said, interrupted=False)

    async def _say(self, reply: _Reply, text: str) -> None:
        sentence = _Sentence(text, (reply.segment_id, len(reply.sentences)))
        reply.sentences.append(sentence)
        resampler = Resampler48(self.voice.sample_rate)
        times = reply.times
        async for pcm in self.voice.speak(text, self.voice_spec):
            if times.first_audio is None:
                times.first_audio = time.time()
            self._queue(reply, sentence, resampler.resample(pcm))
        self._queue(reply, sentence, resampler.flush())
        sentence.complete = True

    def _queue(self, reply: _Reply, sentence: _Sentence, pcm48: bytes) -> None:
        if not pcm48:
            return
        if reply.started_at is None:
            # The first frame of this reply goes out at the next tick (the queue was idle).
            reply.started_at = time.time()
        sentence.samples += len(pcm48) // 2
        self.audio.play(pcm48, sentence.tag)

    def _spoken(self, reply: _Reply) -> str:
        """What was said of ``reply`` so far: its sentences played, and the share of the words
        of the one under way that its played audio covers."""
        words: list[str] = []
        for sentence in reply.sentences:
            played = self.audio.played(sentence.tag)
            if played <= 0 or sentence.samples <= 0:
                break
            if played >= sentence.samples and sentence.complete:
                words += sentence.text.split()
                continue
            parts = sentence.text.split()
            words += parts[: int(len(parts) * min(1.0, played / sentence.samples))]
            break
        return " ".join(words)

    def _barge_in(self) -> bool:
        reply, task = self._reply, self._reply_task
        if reply is None or task is None or task.done():
            return False
        said = self._spoken(reply)
        heard_any = any(self.audio.played(s.tag) > 0 for s in reply.sentences)
        self.audio.clear()
        task.cancel()
        self._reply = None
        logger.info("%s barge-in: the agent stops%s", self._log,
                    f" after {said!r}" if heard_any else " before speaking")
        if not heard_any:
            if reply.times.heard:  # the person's words wait for the end of their new turn
                self._turn.insert(0, reply.times.heard)
                self._turn_times = reply.times
            return False
        self._finish(reply, said, interrupted=True)
        self._noting = asyncio.get_running_loop().create_task(
            self._note_interrupted(), name=f"agent interrupted {self._log}")
        return True

    async def _note_interrupted(self) -> None:
        try:
            async for _ in self.brain.respond(list(self.history), BrainEvent("interrupted")):
                pass  # nothing is said over the person
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s brain failed on the interruption", self._log)

    def _finish(self, reply: _Reply, said: str, *, interrupted: bool) -> None:
        times = reply.times
        times.said, times.interrupted = said, interrupted
        if reply.started_at is not None:
            times.first_sent = max(reply.started_at, self.audio.speech_started_at or 0.0)
        self.turns.append(times)
        for sentence in reply.sentences:
            self.audio.forget(sentence.tag)
        self._last_activity = time.monotonic()
        self._silence_told = False
        if not said and not interrupted:
            return
        self.history.append(Line("agent", said, interrupted=interrupted))
        start = times.first_sent or time.time()
        self._on_line(reply.segment_id, said, interrupted, start, time.time())
        logger.info("%s agent %s: %r", self._log, "interrupted" if interrupted else "said",
                    said)

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        """Stop speaking; close the brain and the voice (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.audio.clear()
        tasks = [t for t in (self._reply_task, self._noting) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.brain.aclose()
        await self.voice.aclose()
