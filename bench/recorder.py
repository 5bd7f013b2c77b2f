"""Recorder CPU per recorded participant, side by side with a decode-and-re-encode recorder,
and the post-processing (mix, composite) speed as a multiple of real time.

    .venv/bin/python -m bench.recorder [--window 20] [--offline-only]

1. **Over WebRTC** (the whole receive path). A hub and the server peer (a
   :class:`~media.tap.worker.TapWorker`, role ``tap``) run in *this* process; a separate bot
   process joins two aiortc bots (Opus tone, and for "audio+video" their synthetic 320x240
   15 fps camera) to a meeting that records. Once every track flows, this process's CPU time
   (all threads: aiortc's receive path, SRTP, jitter buffers, the recorder, and the idle hub)
   is measured over ``--window`` seconds and divided by the participants: % of one core per
   recorded participant. Each kind runs three times with a different recorder in the server
   peer:

   - *receive only*: frames are taken at the seam and dropped (what the receive path costs);
   - *mux (this recorder)*: :class:`~media.tap.recorder.Recorder`: packets written as sent;
   - *decode + re-encode*: each frame decoded (Opus, VP8) and encoded again (libopus, libvpx
     real-time) into the same kind of file: what a recorder built on decoded frames costs.

2. **Post-processing** of the "audio+video, mux" meeting's files, each in its own child
   process as the hub runs it (``python -m media.tap.mixdown``): the mix alone, then the mix
   and the composite; CPU time of the child, as a multiple of the meeting's length. And the
   composite of four 60 s tracks made offline (four tiles).

3. **Offline** (the recorder's own code, one thread): a minute of Opus muxed vs decoded and
   re-encoded, and the mix of four tracks.

The machine's load moves every figure: the table prints ``uptime``'s load average.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from media.receive import EncodedFrame
from media.tap.composite import VideoInput, composite
from media.tap.mixdown import mix
from media.tap.recorder import Recorder
from media.tap.track_writer import OpusTrackWriter
from media.tap.video_writer import VP8TrackWriter

ROOT = Path(__file__).resolve().parent.parent
BOTS = 2
SECONDS = 60
RATE = 48_000
TB = fractions.Fraction(1, RATE)


def packets(seconds: int) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = RATE, "stereo", "s16"
    encoder.time_base = TB
    rng = np.random.default_rng(1)
    out: list[bytes] = []
    for i in range(seconds * 50):
        t = (np.arange(960) + i * 960) / RATE
        voice = np.sin(2 * np.pi * (180 + 40 * np.sin(t)) * t) * 6000 + rng.normal(0, 300, 960)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(voice.astype(np.int16), 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = RATE, i * 960
        out += [bytes(p) for p in encoder.encode(frame)]  # type: ignore[union-attr]
    return out


def mux_only(data: list[bytes], path: Path) -> float:
    start = time.process_time()
    writer = OpusTrackWriter(path, started_at_ms=0)
    for i, payload in enumerate(data):
        writer.push(EncodedFrame(track="t", codec="audio/opus", data=payload,
                                 timestamp=i * 960, arrival=0.0))
    writer.close()
    return time.process_time() - start


def decode_and_reencode(data: list[bytes], path: Path) -> float:
    start = time.process_time()
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout, decoder.format = RATE, "stereo", "s16"
    container = av.open(str(path), "w", format="ogg")
    stream = container.add_stream("libopus", rate=RATE)
    stream.layout = "stereo"
    for i, payload in enumerate(data):
        packet = av.Packet(payload)
        packet.pts, packet.time_base = i * 960, TB
        for frame in decoder.decode(packet):
            for out in stream.encode(frame):  # type: ignore[arg-type]
                container.mux(out)
    for out in stream.encode(None):
        container.mux(out)
    container.close()
    return time.process_time() - start




# --------------------------------------------------------------------------- the recorders


class DropRecorder(Recorder):
    """The receive path alone: frames reach the seam and are counted, nothing is written."""

    seen: dict[str, int]

    def on_encoded(self, peer_id: str, frame: EncodedFrame) -> None:
        self.seen = getattr(self, "seen", {})
        self.seen[frame.track] = self.seen.get(frame.track, 0) + 1


class MuxRecorder(Recorder):
    """This recorder, counting frames for the bench."""

    seen: dict[str, int]

    def on_encoded(self, peer_id: str, frame: EncodedFrame) -> None:
        self.seen = getattr(self, "seen", {})
        self.seen[frame.track] = self.seen.get(frame.track, 0) + 1
        super().on_encoded(peer_id, frame)


class _Recode:
    """One track decoded and encoded again into its own file."""

    def __init__(self, path: Path, codec: str) -> None:
        self.video = codec.lower() == "video/vp8"
        self.decoder = av.CodecContext.create("vp8" if self.video else "opus", "r")
        self.decoder.thread_count = 1
        self.container = av.open(str(path), "w", format="webm" if self.video else "ogg")
        self.stream: Any = None
        self.samples = 0
        self.first_rtp: int | None = None
        self.name = ""

    def push(self, frame: EncodedFrame) -> None:
        packet = av.Packet(frame.data)
        try:
            decoded = self.decoder.decode(packet)
        except av.FFmpegError:  # before the first key frame
            if frame.request_keyframe is not None:
                frame.request_keyframe()
            return
        for picture in decoded:
            if self.stream is None:
                self._open(picture)
            if self.video:
                self.first_rtp = frame.timestamp if self.first_rtp is None else self.first_rtp
                picture.pts = (frame.timestamp - self.first_rtp) % (1 << 32)
                picture.time_base = fractions.Fraction(1, 90_000)
            else:
                picture.pts, picture.time_base = self.samples, TB
                self.samples += picture.samples
            for out in self.stream.encode(picture):
                self.container.mux(out)

    def _open(self, picture: Any) -> None:
        if self.video:
            stream = self.container.add_stream("libvpx", rate=30)
            stream.width, stream.height, stream.pix_fmt = picture.width, picture.height, \
                "yuv420p"
            stream.time_base = fractions.Fraction(1, 90_000)
            stream.codec_context.options = {"deadline": "realtime", "cpu-used": "8"}
            stream.bit_rate = 500_000
        else:
            stream = self.container.add_stream("libopus", rate=RATE)
            stream.layout = "stereo"
        stream.codec_context.thread_count = 1
        self.stream = stream

    def close(self) -> None:
        if self.stream is not None:
            for out in self.stream.encode(None):
                self.container.mux(out)
        self.container.close()


class RecodeRecorder(Recorder):
    """A recorder built on decoded frames: every frame decoded (as aiortc's decoder would) and
    encoded again (libopus; libvpx real-time, one thread) into an Ogg / WebM file."""

    seen: dict[str, int]

    def on_encoded(self, peer_id: str, frame: EncodedFrame) -> None:
        self.seen = getattr(self, "seen", {})
        self.seen[frame.track] = self.seen.get(frame.track, 0) + 1
        tracks: dict[str, _Recode] = self.__dict__.setdefault("recodes", {})
        track = tracks.get(frame.track)
        if track is None:
            name = f"recode.{frame.track}.{self.part}"
            track = tracks[frame.track] = _Recode(self.storage.begin(self.meeting_id, name),
                                                  frame.codec)
            track.name = name
        track.push(frame)

    async def aclose(self) -> None:
        for track in self.__dict__.pop("recodes", {}).values():
            track.close()  # written to the end, then thrown away: not the meeting's files
            self.storage.discard(self.meeting_id, track.name)
        await super().aclose()


RECORDERS: dict[str, type[Recorder]] = {
    "receive only": DropRecorder, "mux (this recorder)": MuxRecorder,
    "decode + re-encode": RecodeRecorder}


# --------------------------------------------------------------------------- over WebRTC


async def bots_main(spec: dict[str, Any]) -> None:
    """Runs in the bot process: join, send until ``run_s`` is over (or stdin closes)."""
    from media import OpusSpec, PeerClient, PeerClientConfig

    async def one(token: str, name: str) -> None:
        config = PeerClientConfig(ws_url=spec["ws_url"], token=token, audio=OpusSpec(),
                                  send_video=spec["video"], decode_audio=False,
                                  decode_video=False, pin_host_addresses=("127.0.0.1",),
                                  ice_timeout_s=20.0, name=name)
        async with PeerClient(config):
            await asyncio.sleep(spec["run_s"])

    await asyncio.gather(*(one(token, f"bot{i}") for i, token in enumerate(spec["tokens"])))


def load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


async def over_webrtc(root: Path, window_s: float) -> tuple[list[dict[str, Any]], Path, str,
                                                              int]:
    """Each kind (audio, audio+video) with each recorder: % of a core per participant. Returns
    the rows, the recording dir, the mux audio+video meeting and its length (ms)."""
    import media.tap.session as session_module
    from media.tap.config import TapConfig
    from media.tap.worker import TapWorker
    from signaling.app import HUB_KEY
    from signaling.testing.hub import start_hub, test_settings

    rec_dir = root / "recordings"
    hub = await start_hub(test_settings(recording={"dir": str(rec_dir)}))
    rows: list[dict[str, Any]] = []
    kept = ("", 0)
    original = session_module.Recorder
    try:
        for video in (False, True):
            for label, recorder_type in RECORDERS.items():
                session_module.Recorder = recorder_type  # type: ignore[misc]
                worker = TapWorker(hub.app[HUB_KEY].transcripts.tap_jobs,
                                   hub_url=lambda: hub.ws_url, worker_id="bench-rec",
                                   config=TapConfig(pin_host_addresses=("127.0.0.1",),
                                                    recording_dir=str(rec_dir)))
                await worker.start()
                try:
                    row, meeting = await one_meeting(hub, worker, video=video,
                                                     window_s=window_s)
                finally:
                    await worker.aclose()
                row |= {"kind": "audio+video" if video else "audio", "recorder": label}
                rows.append(row)
                print(f"  {row['kind']:<12} {label:<22} {row['pct_per_participant']:6.2f} % of "
                      f"a core per participant ({load()})", file=sys.stderr)
                if video and recorder_type is MuxRecorder:
                    kept = meeting
                # The hub mixes each meeting as it ends: let it finish before the next.
                await _wait_mixed(hub, meeting[0])
    finally:
        session_module.Recorder = original  # type: ignore[misc]
        await hub.aclose()
    return rows, rec_dir, kept[0], kept[1]


async def _wait_mixed(hub: Any, meeting_id: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, body = await hub.call("recordings/getRecording", {"meetingId": meeting_id},
                                      user="u0")
        if status == 200 and body["value"]["state"] in ("ready", "failed"):
            return
        await asyncio.sleep(0.5)


async def one_meeting(hub: Any, worker: Any, *, video: bool,
                      window_s: float) -> tuple[dict[str, Any], tuple[str, int]]:
    from signaling.app import STORE_KEY

    meeting_id, room_id = await hub.create_room(
        host="u0", invite=tuple(f"u{i}" for i in range(1, BOTS)), recordingEnabled=True)
    tokens = [hub.mint_token(room_id, "u0", "host")] + \
        [hub.mint_token(room_id, f"u{i}") for i in range(1, BOTS)]
    spec = {"ws_url": hub.ws_url, "tokens": tokens, "video": video, "run_s": window_s + 60}
    bots = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.recorder", "--bots", json.dumps(spec), cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        tracks = BOTS * (2 if video else 1)

        def flowing() -> dict[str, int] | None:
            session = worker.sessions.get(room_id)
            seen = getattr(session.recorder, "seen", None) if session else None
            return dict(seen) if seen and len(seen) >= tracks and \
                min(seen.values()) >= 50 else None

        deadline = time.monotonic() + 60
        while (before := flowing()) is None:
            if time.monotonic() > deadline or bots.returncode is not None:
                raise RuntimeError("the bots' tracks never all reached the server peer")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # past the first key frames and the files' headers
        before = flowing() or before
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(window_s)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        after = flowing() or before
        frames = {t: after[t] - before.get(t, 0) for t in after}
        status, body = await hub.call("lifecycle/endMeeting", {"meetingId": meeting_id},
                                      user="u0")
        assert status == 200, body
    finally:
        if bots.returncode is None:
            bots.terminate()
        await bots.wait()
    store = hub.app[STORE_KEY]
    meeting = await store.get_meeting(meeting_id)
    room = await store.get_room(room_id)
    length_ms = (room.ended_at or 0) - (meeting.started_at or 0) if meeting and room else 0
    row = {"cpu_s": cpu, "wall_s": wall, "frames": frames,
           "pct_per_participant": 100 * cpu / wall / BOTS}
    return row, (meeting_id, length_ms)


def post_processing(rec_dir: Path, meeting_id: str, length_ms: int,
                    root: Path) -> list[tuple[str, float, float]]:
    """(what, child CPU s, wall s) of the mix alone and of the mix with the composite."""
    from signaling.recording_storage import DirectoryStorage

    storage = DirectoryStorage(rec_dir)
    files = [f for f in storage.files(meeting_id) if f.meta.kind == "track"]
    audio = [str(storage.local_path(meeting_id, f.name)) for f in files
             if f.meta.mime_type.startswith("audio/")]
    video = [a for f in files if f.meta.mime_type.startswith("video/")
             for a in ("--video", f.meta.user_id, str(storage.local_path(meeting_id, f.name)))]
    base = [sys.executable, "-m", "media.tap.mixdown", "--out", str(root / "pp-mix.ogg"),
            "--duration-ms", str(length_ms)]
    results = []
    for what, extra in ((f"mix ({len(audio)} tracks)", []),
                        (f"mix + composite ({len(video) // 3} video tracks, 640x360 15 fps)",
                         ["--composite", str(root / "pp-composite.webm"), *video])):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic()
        subprocess.run([*base, *extra, *audio], check=True, capture_output=True, cwd=ROOT)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        results.append((what, after.ru_utime + after.ru_stime - before.ru_utime
                        - before.ru_stime, time.monotonic() - wall))
    return results


def offline_composite(root: Path, seconds: int = 60) -> tuple[float, int]:
    """CPU s (this process) of the composite of four ``seconds`` long 320x240 15 fps tracks."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90_000)
    encoder.options = {"deadline": "realtime", "cpu-used": "8"}
    inputs = []
    packets: list[tuple[bytes, int]] = []
    rng = np.random.default_rng(2)
    for i in range(seconds * 15):
        image = np.full((360, 320), 128, np.uint8)
        image[:240] = rng.integers(60, 200, (240, 320), dtype=np.uint8) // 16 * 16
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts, frame.time_base = i * 6000, encoder.time_base
        packets += [(bytes(p), int(p.pts or 0)) for p in encoder.encode(frame)]  # type: ignore[union-attr]
    for n in range(4):
        path = root / f"v{n}.webm"
        writer = VP8TrackWriter(path, started_at_ms=0)
        for data, pts in packets:
            writer.push(EncodedFrame(track="t", codec="video/VP8", data=data, timestamp=pts,
                                     arrival=0.0))
        writer.close()
        inputs.append(VideoInput(path, f"user {n}"))
    start = time.process_time()
    made = composite(inputs, root / "c.webm", duration_ms=seconds * 1000)
    return time.process_time() - start, made.frames


def offline() -> dict[str, float]:
    data = packets(SECONDS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        muxed = min(mux_only(data, root / f"m{i}.ogg") for i in range(3))
        recoded = min(decode_and_reencode(data, root / f"r{i}.ogg") for i in range(2))
        tracks = [root / "m0.ogg", root / "m1.ogg", root / "m2.ogg", root / "r0.ogg"]
        start = time.process_time()
        mix(tracks, root / "mix.ogg", duration_ms=SECONDS * 1000)
        mixed = time.process_time() - start
        comp, _ = offline_composite(root)
    return {"muxed": muxed, "recoded": recoded, "mixed": mixed, "composite": comp}


def table(rows: list[dict[str, Any]], post: list[tuple[str, float, float]], length_ms: int,
          off: dict[str, float], window_s: float) -> str:
    lines = [(f"Recorder over WebRTC: {BOTS} aiortc bots -> the server peer, {window_s:.0f} s "
             f"window; CPU of the server peer's process (all threads) per participant"),
             (f"{'tracks':<14}{'recorder':<24}{'CPU s':>8}{'% of a core':>14}"
             f"{'/participant':>14}{'frames/s in':>13}")]
    for row in rows:
        fps = sum(row["frames"].values()) / row["wall_s"]
        lines.append(f"{row['kind']:<14}{row['recorder']:<24}{row['cpu_s']:>8.2f}"
                     f"{100 * row['cpu_s'] / row['wall_s']:>13.1f}%"
                     f"{row['pct_per_participant']:>13.2f}%{fps:>13.0f}")
    if post:
        lines.append(f"Post-processing of the audio+video meeting ({length_ms / 1000:.1f} s), "
                     "child process, one thread, nice 10")
        for what, cpu, wall in post:
            lines.append(f"  {what:<58} {cpu:6.2f} CPU s, {wall:5.2f} s wall = "
                         f"{length_ms / 1000 / max(cpu, 1e-6):5.1f}x real time")
    lines += [
        f"Offline, one thread, {SECONDS} s of one participant's Opus:",
        (f"  mux the packets (this recorder) {off['muxed']:.3f} CPU s "
        f"({100 * off['muxed'] / SECONDS:.2f} % of a core); decode and re-encode "
        f"{off['recoded']:.3f} CPU s ({100 * off['recoded'] / SECONDS:.2f} %): "
        f"{off['recoded'] / off['muxed']:.0f}x"),
        (f"  mix of 4 tracks x {SECONDS} s: {off['mixed']:.2f} CPU s = "
        f"{SECONDS / off['mixed']:.0f}x real time"),
        (f"  composite of 4 video tracks x {SECONDS} s (320x240 15 fps in, 640x360 15 fps "
        f"out): {off['composite']:.2f} CPU s = {SECONDS / off['composite']:.1f}x real time"),
        f"{os.cpu_count()} cores, {load()}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recorder")
    parser.add_argument("--window", type=float, default=20.0,
                        help="seconds of each meeting measured")
    parser.add_argument("--offline-only", action="store_true")
    parser.add_argument("--bots", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bots:
        asyncio.run(bots_main(json.loads(args.bots)))
        return
    rows: list[dict[str, Any]] = []
    post: list[tuple[str, float, float]] = []
    length_ms = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.offline_only:
            rows, rec_dir, meeting_id, length_ms = asyncio.run(over_webrtc(root, args.window))
            post = post_processing(rec_dir, meeting_id, length_ms, root)
        off = offline()
    print(table(rows, post, length_ms, off, args.window))


if __name__ == "__main__":
    main()
