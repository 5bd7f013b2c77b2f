"""The hub's side of recording: the server peer job for rooms that record, the ``recording``
frame (from the server peer only), ``recordings/getRecording`` and signed, expiring downloads
with Range support. Track files here are real Ogg/Opus files written by the recorder's writer
from libopus packets (the end-to-end recording over WebRTC is
``tests/media/tap/test_recording.py``)."""

from __future__ import annotations

import fractions
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import numpy as np
import pytest

from media.receive import EncodedFrame
from media.tap.track_writer import MIME_TYPE, OpusTrackWriter
from signaling import protocol as p
from signaling.app import HUB_KEY, MIXER_KEY, RECORDINGS_KEY
from signaling.mixjobs import MixJob
from signaling.recording_storage import DirectoryStorage, TrackMeta
from signaling.tapjobs import MemoryTapJobs
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.wsclient import WsClient
from tests.waiting import wait_until


@pytest.fixture
async def rec_hub(tmp_path: Path) -> AsyncIterator[HubHandle]:
    handle = await start_hub(test_settings(recording={"dir": str(tmp_path / "rec")}))
    try:
        yield handle
    finally:
        await handle.aclose()


def opus_packets(seconds: float) -> list[bytes]:
    """A 440 Hz tone encoded by libopus in 20 ms packets (what a sender puts in RTP)."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48_000, "stereo", "s16"
    encoder.time_base = fractions.Fraction(1, 48_000)
    packets: list[bytes] = []
    for i in range(int(seconds / 0.02)):
        t = (np.arange(960) + i * 960) / 48_000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16",
                                           layout="stereo")
        frame.sample_rate, frame.pts = 48_000, i * 960
        packets += [bytes(packet) for packet in encoder.encode(frame)]  # type: ignore[union-attr]
    return packets


def record_track(storage: DirectoryStorage, meeting_id: str, name: str, *, started_at_ms: int,
                 seconds: float = 2.0) -> None:
    """Write ``seconds`` of tone as the recorder does, arriving 1 s into the meeting, with an
    RTP timestamp that wraps; commit it."""
    path = storage.begin(meeting_id, name)
    writer = OpusTrackWriter(path, started_at_ms=started_at_ms)
    arrival = (started_at_ms + 1000) / 1000
    for i, data in enumerate(opus_packets(seconds)):
        writer.push(EncodedFrame(track="t", codec="audio/opus", data=data,
                                 timestamp=(2**32 - 4800 + i * 960) % 2**32, arrival=arrival))
    summary = writer.close()
    storage.commit(meeting_id, name, TrackMeta(
        peer_id="p_1", user_id="bob", mime_type=MIME_TYPE, start_ms=summary.start_ms,
        duration_ms=summary.duration_ms, packets=summary.packets))


async def test_a_meeting_that_records_gets_the_server_peer_and_only_it_says_recording(
    rec_hub: HubHandle,
) -> None:
    jobs = rec_hub.app[HUB_KEY].transcripts.tap_jobs
    assert isinstance(jobs, MemoryTapJobs)
    _, room_id = await rec_hub.create_room(invite=("bob",), recordingEnabled=True)
    job = await jobs.claim("tap-1", timeout_s=1)
    assert job is not None and job.room_id == room_id
    assert (job.recording, job.transcription) == (True, False)
    host, bob, tap = [await WsClient.connect(rec_hub.ws_url) for _ in range(3)]
    try:
        joined = await host.join(rec_hub.mint_token(room_id, "host", "host"))
        assert joined.features.recording
        await bob.join(rec_hub.mint_token(room_id, "bob"))
        await tap.join(job.token)
        await tap.send({"type": "recording", "state": "recording"})
        assert (await host.expect(p.Recording)).state == "recording"
        assert (await bob.expect(p.Recording)).state == "recording"
        await tap.send({"type": "recording", "state": "stopped"})
        assert (await bob.expect(p.Recording)).state == "stopped"
        # A participant cannot claim the room is (not) recorded; bad states are refused.
        await bob.send({"type": "recording", "state": "stopped"})
        assert (await bob.expect(p.Error)).code == "forbidden"
        await tap.send({"type": "recording", "state": "paused"})
        assert (await tap.expect(p.Error)).code == "invalid-message"
    finally:
        for c in (host, bob, tap):
            await c.aclose()


async def test_recording_frames_are_refused_in_a_room_that_does_not_record(
    rec_hub: HubHandle,
) -> None:
    _, room_id = await rec_hub.create_room(transcription=True)
    host, tap = [await WsClient.connect(rec_hub.ws_url) for _ in range(2)]
    try:
        await host.join(rec_hub.mint_token(room_id, "host", "host"))
        await tap.join(rec_hub.mint_token(room_id, "tap", "tap"))
        await tap.send({"type": "recording", "state": "recording"})
        assert (await tap.expect(p.Error)).code == "invalid-message"
    finally:
        for c in (host, tap):
            await c.aclose()


async def test_get_recording_lists_track_files_with_signed_range_downloads(
    rec_hub: HubHandle,
) -> None:
    meeting_id, _ = await rec_hub.create_room(invite=("bob",), recordingEnabled=True)
    storage = DirectoryStorage(rec_hub.settings.recording.dir)
    started_at = int(time.time() * 1000) - 5000  # the writer only needs the meeting's zero
    record_track(storage, meeting_id, "p_1.1.abc.ogg", started_at_ms=started_at)
    status, body = await rec_hub.call("recordings/getRecording", {"meetingId": meeting_id})
    assert status == 200, body
    value = body["value"]
    assert value["meetingId"] == meeting_id and value["state"] == "recording"
    [track] = value["files"]
    assert {k: track[k] for k in ("kind", "peerId", "userId", "mimeType", "startMs")} == {
        "kind": "track", "peerId": "p_1", "userId": "bob", "mimeType": MIME_TYPE,
        "startMs": 1000}
    assert track["durationMs"] == 2000
    path = storage.local_path(meeting_id, "p_1.1.abc.ogg")
    assert path is not None and track["bytes"] == path.stat().st_size
    # Participants may read it too; others may not.
    status, _ = await rec_hub.call("recordings/getRecording", {"meetingId": meeting_id},
                                   user="bob")
    assert status == 200
    status, body = await rec_hub.call("recordings/getRecording", {"meetingId": meeting_id},
                                      user="mallory")
    assert status == 403 and body["errorData"]["code"] == "not-invited"

    session = await rec_hub.session()
    url = track["url"]
    assert urlsplit(url).netloc == urlsplit(rec_hub.base_url).netloc
    async with session.get(url) as resp:  # no bearer token: the signature is the credential
        assert resp.status == 200 and resp.headers["Content-Type"] == "audio/ogg"
        whole = await resp.read()
    assert whole == path.read_bytes()
    async with session.get(url, headers={"Range": "bytes=100-1099"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 100-1099/{len(whole)}"
        assert await resp.read() == whole[100:1100]
    async with session.get(url, headers={"Range": f"bytes={len(whole) + 10}-"}) as resp:
        assert resp.status == 416

    # Tampered, expired, malformed or missing signatures: 403, never 500.
    base, _, query = url.partition("?")
    expired = rec_hub.base_url + rec_hub.app[RECORDINGS_KEY].signed_path(
        meeting_id, "p_1.1.abc.ogg", now=time.time() - 2 * rec_hub.settings.recording.url_ttl_s)
    bad = [
        url[:-1] + ("0" if url[-1] != "0" else "1"),  # one hex digit changed
        base,  # no query at all
        base + "?expires=abc&sig=" + "0" * 64,
        expired,
        url.replace("p_1.1.abc.ogg", "p_1.1.abd.ogg"),  # signature of another file
        url.replace(meeting_id, "meeting_other"),
        rec_hub.base_url + "/recordings/..%2F..%2Fetc/passwd?" + query,
        rec_hub.base_url + f"/recordings/{meeting_id}/p_1.1.abc.ogg.json?" + query,
    ]
    for bad_url in bad:
        async with session.get(bad_url) as resp:
            assert resp.status in (403, 404), (bad_url, resp.status)
            assert resp.status != 404 or "..%2F" in bad_url
    # A well-signed link to a file that is not there: 404.
    gone = rec_hub.base_url + rec_hub.app[RECORDINGS_KEY].signed_path(meeting_id, "p_9.1.x.ogg")
    async with session.get(gone) as resp:
        assert resp.status == 404


async def test_recording_state_follows_the_meeting_and_its_unfinished_files(
    rec_hub: HubHandle,
) -> None:
    meeting_id, _ = await rec_hub.create_room(recordingEnabled=True)
    storage = DirectoryStorage(rec_hub.settings.recording.dir)

    async def state() -> str:
        status, body = await rec_hub.call("recordings/getRecording", {"meetingId": meeting_id})
        assert status == 200, body
        return str(body["value"]["state"])

    assert await state() == "recording"
    unfinished = storage.begin(meeting_id, "p_2.1.abc.ogg")
    unfinished.write_bytes(b"OggS")
    status, body = await rec_hub.call("lifecycle/endMeeting", {"meetingId": meeting_id})
    assert status == 200, body
    assert await state() == "processing"  # a recorder is still finishing a file
    old = time.time() - 2 * rec_hub.settings.recording.stale_after_s
    os.utime(unfinished, (old, old))
    # ... it was never finished, and it is not an Ogg file: the mix is made without it and
    # the recording has lost it.
    await wait_until(lambda: _is(state(), "failed"), timeout=30, what="the recording failed")
    unfinished.unlink()
    # Without it the recording is complete once the mix (of nobody: silence) is made.
    await wait_until(lambda: _is(state(), "ready"), timeout=30, what="the mix made")
    status, body = await rec_hub.call("recordings/getRecording", {"meetingId": meeting_id})
    [mixed] = body["value"]["files"]
    assert mixed["kind"] == "mix" and "peerId" not in mixed and mixed["startMs"] == 0
    path = storage.local_path(meeting_id, "mix.ogg")
    assert path is not None
    with av.open(str(path)) as container:
        seconds = sum(f.samples for f in container.decode(audio=0)) / 48_000
    assert abs(seconds - mixed["durationMs"] / 1000) < 0.05


async def test_a_file_left_by_a_killed_recorder_is_salvaged_and_mixed(
    rec_hub: HubHandle,
) -> None:
    """A recorder killed mid-meeting leaves its Ogg file unfinished (cut mid-page) in
    ``incomplete/`` with its note. After the meeting, once the file is stale, the hub mixes
    what decodes of it and commits it with its owner and real extent: the recording is
    ``ready``, nothing already written is lost."""
    meeting_id, _ = await rec_hub.create_room(recordingEnabled=True)
    storage = DirectoryStorage(rec_hub.settings.recording.dir)
    started_at = int(time.time() * 1000) - 5000
    record_track(storage, meeting_id, "p_1.1.abc.ogg", started_at_ms=started_at, seconds=3.0)
    whole = storage.local_path(meeting_id, "p_1.1.abc.ogg")
    assert whole is not None
    cut = storage.begin(meeting_id, "p_1.1.dead.ogg")
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])  # killed: the last page never written
    storage.note(meeting_id, "p_1.1.dead.ogg", TrackMeta(
        peer_id="p_1", user_id="bob", mime_type=MIME_TYPE, start_ms=0, duration_ms=0,
        packets=0))
    whole.unlink()
    whole.with_name(whole.name + ".json").unlink()
    old = time.time() - 2 * rec_hub.settings.recording.stale_after_s
    os.utime(cut, (old, old))
    status, body = await rec_hub.call("lifecycle/endMeeting", {"meetingId": meeting_id})
    assert status == 200, body

    async def value() -> dict[str, Any] | None:
        status, body = await rec_hub.call("recordings/getRecording", {"meetingId": meeting_id})
        assert status == 200 and body["value"]["state"] != "failed", body
        return body["value"] if body["value"]["state"] == "ready" else None  # type: ignore[no-any-return]

    ready = await wait_until(value, timeout=30, what="the recording ready")
    assert storage.pending(meeting_id) == []
    mixed, track = ready["files"]
    assert mixed["kind"] == "mix" and track["kind"] == "track"
    assert (track["peerId"], track["userId"]) == ("p_1", "bob")
    assert abs(track["startMs"] - 1000) <= 7  # where it was said (less the Opus pre-skip)
    assert 900 <= track["durationMs"] < 2900  # what the pages before the cut hold


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def test_get_recording_refuses_bad_input_and_meetings_that_do_not_record(
    rec_hub: HubHandle,
) -> None:
    plain_id, _ = await rec_hub.create_room()
    for args, status_code, code in [
        ({"meetingId": plain_id}, 404, "not-recorded"),
        ({"meetingId": "meeting_nope"}, 404, "meeting-not-found"),
        ({"meetingId": "../etc"}, 400, "invalid-args"),
        ({"meetingId": ""}, 400, "invalid-args"),
        ({}, 400, "invalid-args"),
    ]:
        status, body = await rec_hub.call("recordings/getRecording", args)
        assert (status, body["errorData"]["code"]) == (status_code, code), args
    status, body = await rec_hub.call("recordings/getRecording", {"meetingId": plain_id},
                                      user=None)
    assert status == 401



@pytest.fixture
async def quick_reclaim_hub(tmp_path: Path) -> AsyncIterator[HubHandle]:
    handle = await start_hub(test_settings(recording={"dir": str(tmp_path / "rec"),
                                                      "mix_reclaim_after_s": 2}))
    try:
        yield handle
    finally:
        await handle.aclose()


async def test_a_mix_of_a_corrupt_track_fails_and_the_storage_keeps_why(
    rec_hub: HubHandle, caplog: pytest.LogCaptureFixture,
) -> None:
    """A committed track of which nothing decodes: a mix without it would leave a participant
    out, so the recording is ``failed``; the reason is logged and kept in the storage, where
    every hub worker (here: a fresh storage object on the same directory) reads it."""
    meeting_id, _ = await rec_hub.create_room(recordingEnabled=True)
    storage = DirectoryStorage(rec_hub.settings.recording.dir)
    storage.begin(meeting_id, "p_1.1.bad.ogg").write_bytes(b"not an ogg file at all" * 100)
    storage.commit(meeting_id, "p_1.1.bad.ogg", TrackMeta(
        peer_id="p_1", user_id="bob", mime_type=MIME_TYPE, start_ms=0, duration_ms=2000,
        packets=100))
    status, body = await rec_hub.call("lifecycle/endMeeting", {"meetingId": meeting_id})
    assert status == 200, body

    async def state() -> str:
        status, body = await rec_hub.call("recordings/getRecording", {"meetingId": meeting_id})
        assert status == 200, body
        return str(body["value"]["state"])

    await wait_until(lambda: _is(state(), "failed"), timeout=30, what="the recording failed")
    reason = await DirectoryStorage(rec_hub.settings.recording.dir).failure(meeting_id)
    assert reason is not None and reason.startswith("track p_1.1.bad.ogg does not decode")
    assert any("mix failed: track p_1.1.bad.ogg does not decode" in r.getMessage()
               for r in caplog.records)
    assert storage.local_path(meeting_id, "mix.ogg") is None


def mixdown_children(parents: set[int]) -> list[int]:
    """Pids of ``media.tap.mixdown`` processes whose parent is one of ``parents``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid in parents and b"media.tap.mixdown" in cmdline:
            found.append(int(entry.name))
    return found


async def test_a_mix_child_killed_mid_mix_is_mixed_again(
    quick_reclaim_hub: HubHandle, caplog: pytest.LogCaptureFixture,
) -> None:
    """kill -9 of the mix child (an operator, the OOM killer): not the recording's fault. The
    job is not completed; its claim expires (``mix_reclaim_after_s``) and the mix is made again
    from the start: the recording becomes ``ready``, not ``failed``."""
    caplog.set_level(logging.INFO, logger="signaling.mixer")
    hub = quick_reclaim_hub
    meeting_id, room_id = await hub.create_room(recordingEnabled=True)
    storage = DirectoryStorage(hub.settings.recording.dir)
    now = int(time.time() * 1000)
    record_track(storage, meeting_id, "p_1.1.abc.ogg", started_at_ms=now - 3_600_000)
    # Queued as the room's end queues it, for an hour-long meeting: a mix long enough to be
    # killed in the middle (the meeting's own job is then a duplicate and not queued).
    jobs = hub.app[RECORDINGS_KEY].mix_jobs
    assert await jobs.enqueue(MixJob(job_id="mix_long", meeting_id=meeting_id,
                                     room_id=room_id, started_at_ms=now - 3_600_000,
                                     ended_at_ms=now))
    status, body = await hub.call("lifecycle/endMeeting", {"meetingId": meeting_id})
    assert status == 200, body
    [child] = await wait_until(lambda: mixdown_children({os.getpid()}), 20,
                               what="the mix child running", interval=0.05)
    os.kill(child, signal.SIGKILL)

    async def ready() -> dict[str, Any] | None:
        status, body = await hub.call("recordings/getRecording", {"meetingId": meeting_id})
        assert status == 200 and body["value"]["state"] != "failed", body
        return body["value"] if body["value"]["state"] == "ready" else None  # type: ignore[no-any-return]

    value = await wait_until(ready, timeout=60, what="the recording ready", interval=0.2)
    mixed = value["files"][0]
    assert mixed["kind"] == "mix" and mixed["durationMs"] == 3_600_000
    messages = [r.getMessage() for r in caplog.records]
    assert any("killed by signal 9" in m for m in messages)
    assert any("mix=mix_long claimed" in m and "(delivery 2)" in m for m in messages)
    assert hub.app[MIXER_KEY].done == 1
