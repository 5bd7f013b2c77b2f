"""pocketsphinx 5 with its bundled US English model: the embedded default recogniser.

No download: the ``pocketsphinx`` wheel ships the acoustic model, a 3-gram language model and
CMUdict. The decoder holds the GIL, so it runs in :class:`~media.tap.procpool.ProcessTranscriber`
processes; :class:`PocketsphinxEngine` is what runs there.

Measured on this project's 2-core machine, over the accuracy corpus of ``bench/tap.py``
(jfk.flac and eight espeak-ng sentences, 110 words) as the tap hears it after aiortc's Opus
encoder (96, 64 and 32 kbit/s; and at x0.5 and x1.41 level), decoded offline through the tap's
own segmenter and this engine. pocketsphinx is chaotic on any one clip -- jfk.flac alone
decodes at WER 0.18-0.59 depending on a -6 dB level change, the resampling path or ``dither``
-- so only pooled differences over all of that count:

- **Cepstral mean.** pocketsphinx normalises features by a running cepstral mean that starts
  from a fixed guess (``cmninit`` 40,3,-1); for a real microphone level it is far off and the
  first seconds of a stream decode as garbage (jfk.flac streamed cold: WER 1.0; primed: 0.18).
  So each stream's first segment is primed: its first ``prime_s`` of audio goes through feature
  extraction alone (``no_search``, batch mean) with the mean reset, then is decoded for real.
  A decoder stays with its speaker while idle, so later segments continue with the adapted
  mean (and noise estimate); a decoder handed to another speaker gets that speaker's saved
  mean. This delays a new speaker's first partials by ``prime_s``, never the finals.
- The **second (flat-lexicon) pass** stays on for up to ``thorough`` (1) speakers decoded at
  the same moment: pooled WER 0.38 with it, 0.42 without (jfk.flac: 0.39 / 0.46), for ~17 %
  more CPU (real-time factor 0.172 / 0.147) and 0.13-0.27 s at ``end_utt`` for a 2-4 s segment
  (in the end-of-speech latency, hence ``max_segment_s``). Speakers beyond ``thorough`` at
  that moment are decoded without it, so a burst of simultaneous speakers costs a little
  accuracy instead of falling behind.
- ``maxhmmpf=4000`` (default 30000) caps the active HMMs per frame (~25 % less CPU than the
  default). 3000 saves another 10-25 % but loses words without the second pass (pooled 0.42 ->
  0.47), so 4000 stays.
- Tried and not adopted (pooled WER with / without the second pass; 0.38 / 0.42 as set):
  ``beam=1e-60`` 0.35 / - and with ``maxhmmpf=3000`` 0.37 / 0.44 (within the noise, ~10 % more
  CPU); ``ds=2`` 0.49 (-27 % CPU); ``topn=3`` 0.41; ``wbeam=1e-25`` with ``maxhmmpf=3000``
  0.40 / 0.48; ``maxwpf=10`` loses words without the second pass (jfk.flac 0.45 -> 0.64).
  ``pl_window=10`` scored 0.38 / 0.42 with 14 % less CPU without the second pass in one
  measurement: a candidate, not needed for the capacity target. Decoded whole, the jfk.flac
  variants do better with ``pl_window=0`` or ``beam=1e-60`` (mean 0.43 -> 0.30), but that did
  not carry over to streamed segments.
- The model's ``feat.params`` sets ``remove_noise``, ``cmn``, ``lowerf``/``upperf``, ``nfilt``,
  ``transform`` and ``lifter``, and it overrides keyword arguments: passing
  ``remove_noise=False`` changes nothing. To change those, pass ``featparams`` (a copy of the
  file without that line) with the new value.
- One decoder is ~90 MB and ~0.45 s of CPU to make. A process keeps up to ``decoders`` (6) of
  them (speakers talking at the same moment): the one it starts with, then one spare made
  whenever the process is idle (:meth:`PocketsphinxEngine.idle`), so a new speaker rarely waits
  for one; a speaker who starts while all are busy has that segment dropped. One process
  transcribes 7-8 simultaneous speakers in real time at 94-98 % of a core (``bench/tap.py``,
  final p95 0.4-0.9 s) and 6 at 80 %: 6 leaves room for a busy machine.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from media.errors import EngineBusyError

from .procpool import ProcessTranscriber
from .transcriber import BYTES_PER_SECOND

if TYPE_CHECKING:
    from .config import TapConfig

#: Decoder parameters that differ from pocketsphinx's defaults (see the module docstring).
DECODER_DEFAULTS: Mapping[str, Any] = {"maxhmmpf": 4_000, "loglevel": "FATAL"}
ENGINE = "media.tap.pocketsphinx_backend:PocketsphinxEngine"
DEFAULT_DECODERS = 6
"""Decoders per process by default: the most speakers one process decodes at the same moment
(one core takes 7-8 in real time, see the module docstring)."""
_ALTERNATE = re.compile(r"\(\d+\)")  # "read(2)": an alternate pronunciation's marker
_MIN_PRIME_BYTES = BYTES_PER_SECOND // 5  # less than 0.2 s gives a worse mean than the guess
_REMEMBERED_STREAMS = 4096
_ENGINE_KEYS = ("decoders", "thorough", "prime_s")  # options that are not decoder parameters


def create(config: TapConfig) -> ProcessTranscriber:
    """The registry's factory for ``recognizer = "pocketsphinx"``."""
    return ProcessTranscriber(
        ENGINE, processes=config.processes, options=dict(config.recognizer_options),
        partial_interval_s=config.partial_interval_s, max_backlog_s=config.max_backlog_s,
        name="pocketsphinx",
    )


@dataclass
class _Decoder:
    decoder: Any
    thorough: bool  # runs the second (flat-lexicon) pass
    owner: str = ""  # the stream it last decoded: its feature state is that speaker's


@dataclass
class _Active:
    slot: _Decoder
    started: bool  # start_utt() called (after priming)
    prime: bytearray


class PocketsphinxEngine:
    """The :class:`~media.tap.engine.Engine` for pocketsphinx (runs in a child process).

    Options: any ``pocketsphinx.Decoder`` keyword (``hmm``, ``lm``, ``dict``, ``beam``, ...)
    over :data:`DECODER_DEFAULTS`; ``decoders`` (default 6): decoders per process, i.e. speakers
    it decodes at the same moment; ``thorough`` (default 1): how many of those run the second
    pass (more accurate, ~17 % more CPU); the others skip it, so a burst of simultaneous
    speakers degrades accuracy a little instead of falling behind; ``prime_s`` (default 1.0):
    audio used to estimate a new stream's cepstral mean.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        import pocketsphinx  # only in the child: ~0.5 s and 90 MB per decoder

        settings = dict(options)
        engine = {key: settings.pop(key) for key in _ENGINE_KEYS if key in settings}
        self.max_decoders = int(engine.get("decoders", DEFAULT_DECODERS))
        self.thorough = int(engine.get("thorough", 1))
        self.prime_bytes = int(float(engine.get("prime_s", 1.0)) * BYTES_PER_SECOND) & ~1
        self._kwargs = {**DECODER_DEFAULTS, **settings}
        if not self._kwargs.get("fwdflat", True):
            self.thorough = 0
        self._pocketsphinx = pocketsphinx
        self._idle: list[_Decoder] = [self._new_decoder(self.thorough > 0)]  # warm, pre-ready
        self._count = 1
        self._active: dict[str, _Active] = {}
        self._means: OrderedDict[str, str] = OrderedDict()  # stream -> cepstral mean

    def _new_decoder(self, thorough: bool) -> _Decoder:
        kwargs = self._kwargs if thorough else {**self._kwargs, "fwdflat": False}
        return _Decoder(self._pocketsphinx.Decoder(**kwargs), thorough)

    @property
    def decoders_made(self) -> int:
        """Decoders this engine holds (idle or in a segment), ~90 MB each."""
        return self._count

    def _wants_thorough(self) -> bool:
        """Whether a segment starting now gets a decoder with the second pass."""
        return sum(a.slot.thorough for a in self._active.values()) < self.thorough

    def idle(self) -> bool:
        """Set-up while the process has nothing to do: keep one idle decoder of the kind the
        next segment would get, so a speaker who starts while every decoder is busy does not
        wait ~0.45 s (all other speakers of the process with them) for one to be made. True:
        call again when next idle."""
        if self._count >= self.max_decoders:
            return False
        thorough = self._wants_thorough()
        if any(d.thorough == thorough for d in self._idle):
            return False
        self._idle.append(self._new_decoder(thorough))
        self._count += 1
        return True

    def _decoder(self, stream_id: str) -> _Decoder:
        thorough = self._wants_thorough()
        fits = [d for d in self._idle if d.thorough == thorough]
        mine = [d for d in fits if d.owner == stream_id]
        if fits:
            slot = (mine or fits)[0]  # the speaker's own, else the least recently used
        elif self._count < self.max_decoders:
            self._count += 1
            return self._new_decoder(thorough)
        elif self._idle:
            slot = self._idle[0]  # none of the wanted kind and no room for one: any will do
        else:
            raise EngineBusyError(f"all {self.max_decoders} decoders busy")
        self._idle.remove(slot)
        return slot

    def begin(self, stream_id: str) -> None:
        if stream_id in self._active:
            self.end(stream_id)
        slot = self._decoder(stream_id)
        decoder = slot.decoder
        if slot.owner == stream_id:
            decoder.start_utt()  # this speaker's decoder: its feature state carries on
            self._active[stream_id] = _Active(slot, True, bytearray())
            return
        slot.owner = stream_id
        decoder.reinit_feat()  # resets the running mean, so priming sets it outright
        mean = self._means.get(stream_id)
        if mean is not None:
            decoder.set_cmn(mean)
            decoder.start_utt()
        self._active[stream_id] = _Active(slot, mean is not None, bytearray())

    def accept(self, stream_id: str, pcm: bytes) -> None:
        active = self._active[stream_id]
        if active.started:
            active.slot.decoder.process_raw(pcm)
            return
        active.prime += pcm
        if len(active.prime) >= self.prime_bytes:
            self._start(active)

    def _start(self, active: _Active) -> None:
        decoder, audio = active.slot.decoder, bytes(active.prime)
        if len(audio) >= _MIN_PRIME_BYTES:
            decoder.start_utt()
            decoder.process_raw(audio, no_search=True, full_utt=True)
            decoder.end_utt()
        decoder.start_utt()
        if audio:
            decoder.process_raw(audio)
        active.started, active.prime = True, bytearray()

    def partial(self, stream_id: str) -> str:
        active = self._active[stream_id]
        return _text(active.slot.decoder.hyp()) if active.started else ""

    def end(self, stream_id: str) -> str:
        active = self._active.pop(stream_id)
        decoder = active.slot.decoder
        try:
            if not active.started:
                self._start(active)
            decoder.end_utt()
            text = _text(decoder.hyp())
            self._means[stream_id] = decoder.get_cmn(False)
            self._means.move_to_end(stream_id)
            while len(self._means) > _REMEMBERED_STREAMS:
                self._means.popitem(last=False)
        except BaseException:
            self._count -= 1  # a decoder in an unknown state is not reused
            raise
        self._idle.append(active.slot)
        return text

    def forget(self, stream_id: str) -> None:
        if stream_id in self._active:
            self.end(stream_id)
        self._means.pop(stream_id, None)
        for slot in self._idle:
            if slot.owner == stream_id:
                slot.owner = ""

    def close(self) -> None:
        self._active.clear()
        self._idle.clear()


def _text(hypothesis: Any) -> str:
    if hypothesis is None:
        return ""
    return " ".join(_ALTERNATE.sub("", hypothesis.hypstr).split())


def direct_options(options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``pocketsphinx.Decoder`` parameters of the engine's thorough decoder (the one with
    the second pass) for the engine ``options``: :data:`DECODER_DEFAULTS` and the options
    without the engine's own keys. Give them to :func:`decode_file_direct` to compare the tap
    with pocketsphinx decoding a file like for like."""
    settings = {**DECODER_DEFAULTS, **(options or {})}
    for key in _ENGINE_KEYS:
        settings.pop(key, None)
    return settings


def decode_file_direct(path: str, **decoder_options: Any) -> str:
    """Decode a whole audio file in one utterance, pocketsphinx's own way (batch cepstral mean
    over the file; pocketsphinx's defaults unless ``decoder_options`` say otherwise): the
    reference the tap's accuracy is compared with. Blocking."""
    import av
    import pocketsphinx

    pcm = bytearray()
    with av.open(path) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16_000)
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                pcm += bytes(out.planes[0])[: out.samples * 2]
        for out in resampler.resample(None):
            pcm += bytes(out.planes[0])[: out.samples * 2]
    decoder = pocketsphinx.Decoder(**{"loglevel": "FATAL", **decoder_options})
    decoder.start_utt()
    decoder.process_raw(bytes(pcm), full_utt=True)
    decoder.end_utt()
    return _text(decoder.hyp())
