"""Video recording through a real hub: real aiortc bots send their (synthetic) camera over
WebRTC (loopback) to the server peer of a meeting that records; each video track is written as
sent (VP8 into WebM, nothing decoded at the tap) and, after the meeting, the composite grid
video is made. Checked as a user would: the files decode with PyAV, start on a key frame, on
the meeting's clock, and the composite plays for as long as the meeting, with its audio.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import av
import pytest

from media import PeerClient, ToneSpec
from media.receive import EncodedFrame
from media.tap.video_writer import VP8TrackWriter, vp8_keyframe
from signaling import protocol
from signaling.app import TAP_HOST_KEY
from signaling.recording_storage import DirectoryStorage
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.media.tap.test_recording import bot, ready, recorder_worker
from tests.waiting import wait_until


def video_frames(path: Path) -> tuple[list[av.VideoFrame], str]:
    """Every decoded frame of a file's video stream and its codec name."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return list(container.decode(stream)), stream.codec_context.name


@pytest.fixture
async def video_hub(tmp_path: Path) -> HubHandle:
    handle = await start_hub(test_settings(recording={"dir": str(tmp_path / "recordings")}))
    try:
        yield handle  # type: ignore[misc]
    finally:
        await handle.aclose()


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_bots_video_is_recorded_as_sent_and_the_composite_plays(
    video_hub: HubHandle,
) -> None:
    """Two bots with camera and microphone in a recorded meeting: the room says it records
    video, the server peer receives each bot's video (besides its audio) without decoding it
    and writes one WebM per video track; after the meeting ``getRecording`` lists the mix, the
    composite and four track files. Each video file decodes (VP8, the bots' 320x240), starts
    on a key frame where its metadata says on the meeting clock; the composite decodes to
    640x360 frames for the meeting's length, two tiles, with the mixed Opus audio."""
    hub = video_hub
    storage = DirectoryStorage(hub.settings.recording.dir)
    async with recorder_worker(hub) as worker:
        meeting_id, room_id = await hub.create_room(host="alice", invite=("bob",),
                                                    recordingEnabled=True)
        alice = PeerClient(bot(hub, hub.mint_token(room_id, "alice", "host"),
                               audio=ToneSpec(), send_video=True))
        bob = PeerClient(bot(hub, hub.mint_token(room_id, "bob"), audio=ToneSpec(frequency_hz=660),
                             send_video=True))
        async with alice, bob:
            assert alice.joined is not None and alice.joined.features.record_video
            session = await wait_until(lambda: worker.sessions.get(room_id), timeout=20,
                                       what="the server peer in the room")
            recorder = session.recorder
            assert recorder is not None

            def videos() -> list[VP8TrackWriter]:
                return [w for w in recorder.open_tracks.values()
                        if isinstance(w, VP8TrackWriter)]

            # Three seconds of both cameras (the bots send 15 fps) ...
            await wait_until(lambda: len(videos()) == 2 and all(w.frames >= 45 for w in videos()),
                             timeout=40, interval=0.1, what="3 s of both bots' video recorded")
            # ... at the size the bots send, read from the VP8 key frames (never decoded).
            assert all(w.size is not None and (w.size.width, w.size.height) == (320, 240)
                       for w in videos())
            alice.send(protocol.End())
            await wait_until(lambda: worker.completed >= 1, timeout=15, interval=0.1,
                             what="the server peer leaving the ended room")
    started = time.monotonic()
    value = await wait_until(lambda: ready(hub, meeting_id, "alice"), timeout=90, interval=0.2,
                             what="getRecording ready (mix and composite)")
    print(f"\nready {time.monotonic() - started:.1f} s after the server peer left")
    kinds = [f["kind"] for f in value["files"]]
    assert kinds == ["mix", "composite", "track", "track", "track", "track"]
    mixed, comp = value["files"][0], value["files"][1]
    assert comp["mimeType"].startswith("video/webm") and comp["durationMs"] == mixed["durationMs"]
    tracks = [f for f in storage.files(meeting_id) if f.meta.kind == "track"]
    video = [f for f in tracks if f.meta.mime_type.startswith("video/webm")]
    assert {f.meta.user_id for f in video} == {"alice", "bob"}
    for stored in video:
        path = storage.local_path(meeting_id, stored.name)
        assert path is not None and path.suffix == ".webm"
        frames, codec = await asyncio.to_thread(video_frames, path)
        first_s = float(frames[0].pts * frames[0].time_base)
        print(f"{stored.meta.user_id}: {stored.name} {len(frames)} frames "
              f"{frames[0].width}x{frames[0].height}, from {first_s:.3f} s "
              f"(meta {stored.meta.start_ms} ms + {stored.meta.duration_ms} ms), "
              f"{stored.size} bytes")
        assert codec == "vp8" and frames[0].key_frame
        assert (frames[0].width, frames[0].height) == (320, 240)
        assert len(frames) >= 45 and len(frames) == stored.meta.packets
        # On the meeting clock, where the metadata says, and within the meeting.
        assert abs(first_s - stored.meta.start_ms / 1000) < 0.002
        assert 0 <= stored.meta.start_ms < 15_000
        last_s = float(frames[-1].pts * frames[-1].time_base)
        assert last_s * 1000 <= mixed["durationMs"] + 500
        # The bots pace 15 fps: the frames' times say so (not the arrival's jitter).
        assert 13 < (len(frames) - 1) / (last_s - first_s) < 17
    comp_path = storage.local_path(meeting_id, "composite.webm")
    assert comp_path is not None
    frames, codec = await asyncio.to_thread(video_frames, comp_path)
    with av.open(str(comp_path)) as container:
        audio = [s.codec_context.name for s in container.streams.audio]
    length_s = float(frames[-1].pts * frames[-1].time_base) + 1 / 15
    print(f"composite: {len(frames)} frames {frames[0].width}x{frames[0].height} {codec}, "
          f"{length_s:.2f} s (meeting {mixed['durationMs'] / 1000:.2f} s), audio {audio}, "
          f"{comp['bytes']} bytes")
    assert codec == "vp8" and audio == ["opus"]
    assert (frames[0].width, frames[0].height) == (640, 360)
    assert abs(length_s - mixed["durationMs"] / 1000) < 0.5
    assert abs(len(frames) - mixed["durationMs"] * 15 / 1000) <= 2
    session_http = await hub.session()
    async with session_http.get(comp["url"], headers={"Range": "bytes=0-3"}) as resp:
        assert resp.status == 206 and resp.headers["Content-Type"] == "video/webm"
        assert await resp.read() == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_key_frame_request_brings_a_key_frame_from_the_sender(
    video_hub: HubHandle,
) -> None:
    """The PLI the recorder sends (``request_keyframe``) reaches the sender over WebRTC and it
    answers with a key frame at once: aiortc's VP8 encoder otherwise makes one only at the
    start (and after 3000 frames: 200 s at the bot's 15 fps), so a second key frame soon
    after asking is the answer."""
    _, room_id = await video_hub.create_room(host="alice", recordingEnabled=True)
    keys: list[float] = []
    frames: list[EncodedFrame] = []

    def on_video(peer_id: str, frame: EncodedFrame) -> None:
        frames.append(frame)
        if vp8_keyframe(frame.data) is not None:
            keys.append(time.monotonic())

    alice = PeerClient(bot(video_hub, video_hub.mint_token(room_id, "alice", "host"),
                           audio=ToneSpec(), send_video=True))
    tap = PeerClient(bot(video_hub, video_hub.mint_token(room_id, "rec", "tap"), audio=None,
                         decode_audio=False, decode_video=False), on_encoded_video=on_video)
    async with alice, tap:
        await wait_until(lambda: len(frames) >= 30, timeout=20, interval=0.05,
                         what="2 s of alice's video at the tap")
        assert len(keys) == 1  # the first frame's, and no other since
        asked = time.monotonic()
        request = frames[-1].request_keyframe
        assert request is not None
        request()
        await wait_until(lambda: len(keys) >= 2, timeout=5, interval=0.02,
                         what="a key frame after the PLI")
        print(f"\nkey frame {1000 * (keys[1] - asked):.0f} ms after the PLI "
              f"({len(frames)} frames so far)")


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_kill_9_mid_meeting_keeps_the_dead_part_of_the_video_too(tmp_path: Path) -> None:
    """The hub's tap process is killed while it records a bot's camera: the successor writes
    a new part; after the meeting the dead part's WebM (never closed) is salvaged up to its
    last cluster and listed with its owner and extent, both video parts decode from a key
    frame, and the composite (one tile: the parts follow each other) covers the meeting."""
    hub = await start_hub(test_settings(tap={"enabled": True},
                                        recording={"dir": str(tmp_path / "rec"),
                                                   "stale_after_s": 3.0}))
    try:
        meeting_id, room_id = await hub.create_room(host="alice", recordingEnabled=True)
        storage = DirectoryStorage(hub.settings.recording.dir)
        host = hub.app[TAP_HOST_KEY]
        alice = PeerClient(bot(hub, hub.mint_token(room_id, "alice", "host"),
                               audio=ToneSpec(), send_video=True))

        def webm_parts(min_bytes: int) -> list[str]:
            return [p.name for p in storage.pending(meeting_id) if p.name.endswith(".webm")
                    and storage.abandoned(meeting_id, p.name)[0].stat().st_size > min_bytes]

        async with alice:
            first = await wait_until(lambda: webm_parts(4_000), timeout=30, interval=0.1,
                                     what="alice's first video part a few clusters long")
            pid = host.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            second = await wait_until(lambda: [n for n in webm_parts(4_000) if n not in first],
                                      timeout=40, interval=0.1,
                                      what="a new video part from the successor")
            alice.send(protocol.End())
            value = await wait_until(lambda: ready(hub, meeting_id, "alice"), timeout=60,
                                     interval=0.2, what="getRecording ready")
    finally:
        await hub.aclose()
    mixed, comp, *tracks = value["files"]
    assert (mixed["kind"], comp["kind"]) == ("mix", "composite")
    videos = sorted((t for t in tracks if t["mimeType"].startswith("video/")),
                    key=lambda t: t["startMs"])
    names = [t["url"].split("/")[-1].split("?")[0] for t in videos]
    assert names == [first[0], second[0]]  # the dead part salvaged, then the successor's
    assert all(t["userId"] == "alice" and t["durationMs"] > 0 for t in videos)
    before, after = videos
    gap_ms = after["startMs"] - (before["startMs"] + before["durationMs"])
    print(f"\nvideo part 1: {before['startMs']} ms + {before['durationMs']} ms (salvaged); "
          f"part 2 from {after['startMs']} ms; gap {gap_ms} ms; meeting {mixed['durationMs']} ms")
    assert 0 < gap_ms < 15_000
    for name, listed in zip(names, videos, strict=True):
        path = storage.local_path(meeting_id, name)
        assert path is not None
        frames, _ = await asyncio.to_thread(video_frames, path)
        assert frames[0].key_frame
        assert abs(float(frames[0].pts * frames[0].time_base) * 1000 - listed["startMs"]) < 2
    comp_path = storage.local_path(meeting_id, "composite.webm")
    assert comp_path is not None
    frames, _ = await asyncio.to_thread(video_frames, comp_path)
    assert abs(float(frames[-1].pts * frames[-1].time_base) + 1 / 15
               - mixed["durationMs"] / 1000) < 0.5
