"""The short-utterance part of ``bench/tap.py``: speakers taking turns, one short sentence each.

Four bots in one transcription room play the short-utterance corpus
(:func:`media.testing.speech.short_utterances`: espeak-ng Klatt voices, sixteen meeting
sentences, 1 s of silence between turns) over WebRTC to the hub's in-process tap, once on a
quiet machine and once **loaded**: one CPU burner per core (a Python spin loop, started before
the bots and killed by PID after them) competing with the hub, the tap, its recogniser process
and the bots. Reported per run:

- WER of the stored transcript per utterance and pooled (errors / reference words), against
  pocketsphinx decoding each sentence's source audio directly (whole, with 0.5 s of its
  speaker's background either side, the tap's decoder parameters) and against decoding what
  the tap heard (after Opus) per sentence;
- every segment the tap finished: with words, empty, or reported dropped, and every sentence
  that got no words with the reason (so nothing is lost silently);
- end of speech -> final text at a participant, p50 / p95.

The first words of short utterances are what this corpus is for: ``bench/tap.py``'s long clips
hide a clipped onset (docs/transcription.md, "Segmentation").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.tap import ROOT, LagProbe, pct, trim_digital_silence

QUIET_S = 4.0  # the bots stay this long after the corpus for the last finals
HEARD_MARGIN_S = 0.5  # heard audio cut per sentence: this much either side (the gap is 1 s)


@contextlib.contextmanager
def cpu_burners(count: int) -> Iterator[list[int]]:
    """``count`` processes that each keep a core busy (a Python spin loop) until the block
    ends; each is killed by its PID."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


@dataclass
class TapFinal:
    """A final the tap produced (before the hub): whose, when (unix s), what."""

    pipeline: str
    start_s: float
    end_s: float
    text: str
    dropped: bool


@dataclass
class Eavesdrop:
    """Records, inside the in-process tap, what each speaker pipeline heard (16 kHz PCM from
    its stream's first sample, and that sample's unix time) and every final it got."""

    heard: dict[str, bytearray] = field(default_factory=dict)
    anchors: dict[str, float] = field(default_factory=dict)
    finals: list[TapFinal] = field(default_factory=list)
    pipelines: dict[str, Any] = field(default_factory=dict)

    async def settled(self, timeout_s: float = 60.0) -> bool:
        """Wait until every pipeline has its finals (a loaded tap is seconds behind when the
        speakers leave); False if some still had none after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while any(p.open_results for p in self.pipelines.values()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        from media.tap import pipeline as tap_pipeline

        cls = tap_pipeline.SpeakerPipeline
        push, recognised = cls.push_pcm, cls.on_recognition
        eavesdrop = self

        def push_pcm(pipeline: Any, pcm: bytes, **kwargs: Any) -> None:
            eavesdrop.heard.setdefault(pipeline.name, bytearray()).extend(pcm)
            push(pipeline, pcm, **kwargs)
            eavesdrop.pipelines[pipeline.name] = pipeline
            eavesdrop.anchors[pipeline.name] = pipeline.stream_start_s  # the latest estimate

        def on_recognition(pipeline: Any, result: Any) -> None:
            times = pipeline._times.get(result.segment_id)
            if result.final and times is not None:
                eavesdrop.finals.append(TapFinal(
                    pipeline.name, times.start_s,
                    times.end_s if times.end_s is not None else times.last_audio_s,
                    result.text, result.dropped))
            recognised(pipeline, result)

        cls.push_pcm = push_pcm  # type: ignore[method-assign,assignment]
        cls.on_recognition = on_recognition  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            cls.push_pcm = push  # type: ignore[method-assign]
            cls.on_recognition = recognised  # type: ignore[method-assign]


async def short_over_webrtc(corpus: Any, *, burners: int = 0) -> dict[str, Any]:
    """The corpus over WebRTC to the in-process tap, with ``burners`` CPU burners running."""
    from signaling.app import STORE_KEY
    from signaling.testing.hub import start_hub, test_settings

    speakers = list(corpus.tracks)
    eavesdrop = Eavesdrop()
    probe = LagProbe()
    with eavesdrop.patched():
        hub = await start_hub(test_settings(tap={"enabled": True}), inline_tap=True)
        try:
            meeting, room = await hub.create_room(host=speakers[0], invite=tuple(speakers[1:]),
                                                  transcription=True)
            record = await hub.app[STORE_KEY].get_meeting(meeting)
            assert record is not None and record.started_at
            started_ms = record.started_at
            spec = {"ws_url": hub.ws_url, "run_s": corpus.duration_s + QUIET_S, "bots": [
                {"name": name, "room": room, "audio": str(corpus.tracks[name]), "loop": False,
                 "record": i == 0,
                 "token": hub.mint_token(room, name, "host" if i == 0 else "participant")}
                for i, name in enumerate(speakers)]}
            with cpu_burners(burners) as burner_pids:
                probe.start()
                bots = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.tap", "--bots", json.dumps(spec), cwd=ROOT,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await bots.communicate()
                settled = await eavesdrop.settled()  # the speakers left; their last finals
                lag = await probe.stop()
            if bots.returncode != 0:
                raise RuntimeError(f"bot process failed:\n{err.decode()[-3000:]}")
            bot_report = json.loads(out.decode().strip().splitlines()[-1])
            status, body = await hub.call("transcripts/getTranscript", {"meetingId": meeting},
                                          user=speakers[0])
            assert status == 200, body
            stored = body["value"]["segments"]
        finally:
            await probe.stop()
            await hub.aclose()
    # Each speaker's stream starts at its track's first sample: track time = unix time - anchor.
    anchor_of = {name.rsplit("peer=", 1)[-1]: anchor
                 for name, anchor in eavesdrop.anchors.items() if f"room={room} " in name}
    speaker_of = {peer: name for name, peer in bot_report["peers"].items()}
    received = bot_report["received"]
    utterances = corpus.utterances
    texts: dict[int, list[str]] = {i: [] for i in range(len(utterances))}
    for s in sorted(stored, key=lambda s: s["startMs"]):
        offset = started_ms / 1000 - anchor_of[s["peerId"]]
        index = corpus.nearest(speaker_of[s["peerId"]], offset + s["startMs"] / 1000,
                               offset + s["endMs"] / 1000)
        texts[index].append(s["text"])
    outcome: dict[int, list[str]] = {i: [] for i in range(len(utterances))}
    for final in eavesdrop.finals:
        peer = final.pipeline.rsplit("peer=", 1)[-1]
        speaker = speaker_of.get(peer)
        if speaker is None or peer not in anchor_of:
            continue  # nothing stored of this speaker: their clips count as without words
        index = corpus.nearest(speaker, final.start_s - anchor_of[peer],
                               final.end_s - anchor_of[peer])
        outcome[index].append("dropped" if final.dropped else "words" if final.text
                              else "empty")
    heard = {}
    for name, pcm in eavesdrop.heard.items():
        peer = name.rsplit("peer=", 1)[-1]
        if peer in speaker_of:
            heard[speaker_of[peer]] = bytes(pcm)
    print("  heard (s): " + ", ".join(f"{k} {len(v) / 32_000:.1f}" for k, v in heard.items())
          + f" of {corpus.duration_s:.1f}; peers {bot_report['peers']}", file=sys.stderr)
    latencies = [(f["at_ms"] - (started_ms + f["end_ms"])) / 1000 for f in received]
    return {"texts": {i: " ".join(t for t in parts if t) for i, parts in texts.items()},
            "outcome": outcome, "latencies_s": latencies, "lag_s": lag, "heard": heard,
            "finals": len(eavesdrop.finals),
            "dropped": sum(f.dropped for f in eavesdrop.finals),
            "with_words": sum(bool(f.text) and not f.dropped for f in eavesdrop.finals),
            "stored": len(stored), "burners": burners, "burner_pids": burner_pids,
            "settled": settled,
            "told_dropped": sum(st["dropped"] for st in bot_report["statuses"] if st["peer"]),
            "statuses": bot_report["statuses"]}


def short_direct(corpus: Any, heard: dict[str, bytes], workdir: Path) -> dict[str, Any]:
    """pocketsphinx, the tap's decoder parameters, each sentence whole: its source audio (with
    0.5 s of its track's background either side), and what the tap heard of it (cut from the
    speaker's stream, digital silence trimmed)."""
    from media.tap.pocketsphinx_backend import decode_file_direct, direct_options

    options = direct_options()
    direct = {i: decode_file_direct(str(u.path), **options)
              for i, u in enumerate(corpus.utterances)}
    heard_texts = {}
    for i, u in enumerate(corpus.utterances):
        pcm = heard.get(u.speaker, b"")
        start = max(0, int((u.start_s - HEARD_MARGIN_S) * 16_000)) * 2
        end = int((u.end_s + HEARD_MARGIN_S) * 16_000) * 2
        cut = trim_digital_silence(pcm[start:end])
        if not cut:  # the tap heard nothing of it (a stream that started late or broke off)
            heard_texts[i] = ""
            continue
        path = workdir / f"heard-short-{i:02d}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            out.writeframes(cut)
        heard_texts[i] = decode_file_direct(str(path), **options)
    return {"direct": direct, "heard": heard_texts}


def scores(corpus: Any, texts: dict[int, str]) -> dict[str, Any]:
    """Per-utterance WER and pooled WER (errors / reference words)."""
    from media.testing.wer import normalise, word_error_rate

    per = [word_error_rate(u.text, texts.get(i, "")) for i, u in enumerate(corpus.utterances)]
    words = [len(normalise(u.text)) for u in corpus.utterances]
    errors = sum(w * n for w, n in zip(per, words))
    return {"per": per, "pooled": errors / max(1, sum(words)), "words": sum(words)}


async def run_short(workdir: Path, burners: int | None = None) -> dict[str, Any]:
    """The corpus once on a quiet machine and once with ``burners`` CPU burners (default: one
    per core)."""
    import os

    from media.testing.speech import SHORT_SPEAKERS, short_utterances

    corpus = short_utterances(workdir / "short")
    runs: dict[str, Any] = {}
    load = (os.cpu_count() or 1) if burners is None else burners
    for label, count in (("quiet", 0), ("loaded", load)):
        print(f"  short utterances: {label} run ({count} CPU burners)", file=sys.stderr)
        result = await short_over_webrtc(corpus, burners=count)
        decoded = await asyncio.to_thread(short_direct, corpus, result.pop("heard"), workdir)
        result.update(tap=scores(corpus, result["texts"]),
                      direct=scores(corpus, decoded["direct"]),
                      heard=scores(corpus, decoded["heard"]),
                      direct_texts=decoded["direct"], heard_texts=decoded["heard"])
        runs[label] = result
    return {"corpus": [(u.speaker, u.text) for u in corpus.utterances],
            "voices": {name: f"{' '.join(v.args)}, noise floor {v.noise_dbfs} dBFS"
                       for name, v in SHORT_SPEAKERS.items()},
            "runs": runs}


def short_table(short: dict[str, Any]) -> str:
    """The short-utterance rows and per-utterance lines."""
    def ratio(a: float, b: float) -> float:
        return a / b if b else float("inf")

    def ok(good: bool) -> str:
        return "yes" if good else "**no**"

    clips = len(short["corpus"])
    quiet, loaded = short["runs"]["quiet"], short["runs"]["loaded"]
    lines = [("| short utterances (espeak-ng, 4 voices, turns 1 s apart) | quiet | loaded "
              f"({loaded['burners']} CPU burners) | target |"), "|---|---|---|---|"]

    def both(f: Any) -> str:
        return f"{f(quiet)} | {f(loaded)}"

    words = quiet["tap"]["words"]
    lines += [
        f"| WER tap (stored transcript), pooled over {clips} clips / {words} words | "
        + both(lambda r: f"{r['tap']['pooled']:.3f}") + " | - |",
        "| WER direct (pocketsphinx, each clip's source whole, 0.5 s of background around) | "
        + both(lambda r: f"{r['direct']['pooled']:.3f}") + " | - |",
        "| ratio tap / direct, pooled | "
        + both(lambda r: f"{ratio(r['tap']['pooled'], r['direct']['pooled']):.2f} "
               f"{ok(ratio(r['tap']['pooled'], r['direct']['pooled']) <= 1.1)}")
        + " | <= 1.1 |",
        "| clips tap worse / same / better than direct | "
        + both(lambda r: "{} / {} / {}".format(*_compare(r))) + " | - |",
        "| WER of what the tap heard (after Opus), each clip whole; tap / heard | "
        + both(lambda r: f"{r['heard']['pooled']:.3f}; "
               f"{ratio(r['tap']['pooled'], r['heard']['pooled']):.2f}") + " | - |",
        ("| segments the tap finished: with words / empty / dropped (stored; dropped as "
         "the room was told; every final in after the speakers left) | ")
        + both(lambda r: f"{r['with_words']} / {r['finals'] - r['with_words'] - r['dropped']}"
               f" / {r['dropped']} ({r['stored']}; {r['told_dropped']}; "
               f"{'yes' if r['settled'] else '**no**'})") + " | - |",
        "| clips without words: dropped / empty / no segment (lost silently) | "
        + both(lambda r: "{} / {} / {}".format(*_missing(r))) + " | 0 silently |",
        "| end of speech -> final text, p50 / p95 | "
        + both(lambda r: f"{pct(r['latencies_s'], 50):.2f} / {pct(r['latencies_s'], 95):.2f}"
               f" s (n={len(r['latencies_s'])})")
        + " | p95 <= 1.0 s (quiet) |",
        "| hub event-loop lag p99 | "
        + both(lambda r: f"{pct([x * 1000 for x in r['lag_s']], 99):.1f} ms") + " | - |",
    ]
    lines.append("")
    lines.append("voices: " + "; ".join(f"{k} {v}" for k, v in short["voices"].items()))
    lines.append("per clip, quiet run (WER tap / direct / heard):")
    for i, (speaker, text) in enumerate(short["corpus"]):
        q = quiet
        lines.append(f"  {speaker} {q['tap']['per'][i]:.2f} / {q['direct']['per'][i]:.2f} / "
                     f"{q['heard']['per'][i]:.2f}  {text!r}: tap {q['texts'][i]!r}, direct "
                     f"{q['direct_texts'][i]!r}; loaded {loaded['tap']['per'][i]:.2f} "
                     f"{loaded['texts'][i]!r}")
    return "\n".join(lines)


def _compare(run: dict[str, Any]) -> tuple[int, int, int]:
    pairs = list(zip(run["tap"]["per"], run["direct"]["per"]))
    return (sum(t > d for t, d in pairs), sum(t == d for t, d in pairs),
            sum(t < d for t, d in pairs))


def _missing(run: dict[str, Any]) -> tuple[int, int, int]:
    """Clips that got no words, by what the tap did with them."""
    dropped = empty = silent = 0
    for i, text in run["texts"].items():
        if text:
            continue
        outcome = run["outcome"][i]
        if "dropped" in outcome:
            dropped += 1
        elif outcome:
            empty += 1
        else:
            silent += 1
    return dropped, empty, silent
