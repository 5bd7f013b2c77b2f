"""Recording through a real hub: real aiortc bots speak espeak-ng sentences over WebRTC
(loopback), the server peer (role ``tap``) records each participant's track from the encoded
Opus frames, and the files are checked as a user would: they decode, they last as long as
what was said, and each holds its own speaker only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import av
import pytest

from media import FileSpec, PeerClient, PeerClientConfig, ToneSpec
from media.tap.config import TapConfig
from media.tap.pocketsphinx_backend import decode_file_direct
from media.tap.worker import TapWorker
from media.testing.speech import WEATHER, WINDOW, speak
from media.testing.wer import normalise, word_error_rate
from signaling import protocol
from signaling.app import HUB_KEY, TAP_HOST_KEY
from signaling.recording_storage import DirectoryStorage, StoredFile
from signaling.tapjobs import TapJobs
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.waiting import wait_until

LOOPBACK = ("127.0.0.1",)


def bot(hub: HubHandle, token: str, **overrides: Any) -> PeerClientConfig:
    values: dict[str, Any] = {"ws_url": hub.ws_url, "token": token,
                              "pin_host_addresses": LOOPBACK, "ice_timeout_s": 10.0}
    values.update(overrides)
    return PeerClientConfig(**values)


@pytest.fixture
async def rec_hub(tmp_path: Path) -> AsyncIterator[HubHandle]:
    """A hub whose recordings go to ``tmp_path/recordings`` (its own tap off)."""
    handle = await start_hub(test_settings(recording={"dir": str(tmp_path / "recordings")}))
    try:
        yield handle
    finally:
        await handle.aclose()


@asynccontextmanager
async def recorder_worker(hub: HubHandle, **config: Any) -> AsyncIterator[TapWorker]:
    """A tap worker (the server peer) on ``hub``'s job queue, writing where the hub reads."""
    jobs: TapJobs = hub.app[HUB_KEY].transcripts.tap_jobs
    worker = TapWorker(jobs, hub_url=lambda: hub.ws_url, worker_id="tap-rec",
                       config=TapConfig(pin_host_addresses=LOOPBACK,
                                        recording_dir=hub.settings.recording.dir, **config))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.aclose()


def decoded(path: Path) -> tuple[float, float, int]:
    """(first sample's time s, decoded seconds, channels) of an audio file, via PyAV."""
    samples, first, channels = 0, None, 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        for frame in container.decode(stream):
            if first is None and frame.pts is not None:
                first = float(frame.pts * frame.time_base)
            samples += frame.samples
            channels = len(frame.layout.channels)
    return first or 0.0, samples / 48_000, channels


async def recording_frames(client: PeerClient, sub: Any, n: int,
                           until: str | None = None) -> list[str]:
    """The states of the next ``n`` ``recording`` frames ``client`` receives (or of those up
    to the first with state ``until``)."""
    states: list[str] = []
    async with asyncio.timeout(30):
        async for message in sub:
            if isinstance(message, protocol.Recording):
                states.append(message.state)
                if len(states) == n or message.state == until:
                    return states
    return states


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_two_speakers_are_recorded_one_file_each_holding_only_its_speaker(
    rec_hub: HubHandle, speech_dir: Path, tmp_path: Path,
) -> None:
    """Recording without transcription: the server peer joins for the recording alone, tells
    the room, and writes one Ogg/Opus file per participant track from the encoded frames
    (nothing decoded at the tap); each file decodes, lasts about as long as the meeting's
    audio of that participant, and pocketsphinx hears its own speaker's sentence in it. After
    the meeting the hub mixes the tracks: the mix lasts as long as the meeting and
    pocketsphinx hears both sentences in it (bob speaks after alice)."""
    storage = DirectoryStorage(rec_hub.settings.recording.dir)
    late_window = speak(WINDOW, tmp_path / "window-late.wav", lead_s=7.0)
    started = time.time()
    async with recorder_worker(rec_hub) as worker:
        meeting_id, room_id = await rec_hub.create_room(host="alice", invite=("bob",),
                                                        recordingEnabled=True)
        alice = PeerClient(bot(rec_hub, rec_hub.mint_token(room_id, "alice", "host"),
                               audio=FileSpec(str(speech_dir / "weather.wav"), loop=False)))
        bob = PeerClient(bot(rec_hub, rec_hub.mint_token(room_id, "bob"),
                             audio=FileSpec(str(late_window), loop=False)))
        with alice.messages() as alice_sub:
            async with alice, bob:
                assert alice.joined is not None and alice.joined.features.recording
                assert await recording_frames(alice, alice_sub, 1) == ["recording"]
                session = await wait_until(lambda: worker.sessions.get(room_id), timeout=20,
                                           what="the server peer in the room")
                recorder = session.recorder
                assert recorder is not None and session.pipelines == {}
                # Until each file holds its whole sentence (the wav files' length) ...
                lengths = {alice.peer_id: _seconds(speech_dir / "weather.wav"),
                           bob.peer_id: _seconds(late_window)}

                def heard_all() -> bool:
                    tracks = recorder.open_tracks
                    return len(tracks) == 2 and all(
                        w.summary().duration_ms / 1000 >= lengths[t.split(".")[0]] - 0.2
                        for t, w in tracks.items())

                await wait_until(heard_all, timeout=40, interval=0.1,
                                 what="both participants' whole sentences recorded")
                # (the bots' tracks end with their files: nothing is sent after) ... then the
                # host ends the meeting: the files are finished and kept.
                alice.send(protocol.End())
                ended = time.time()
                await wait_until(lambda: worker.completed >= 1, timeout=15, interval=0.1,
                                 what="the server peer leaving the ended room")
    # The hub mixes the tracks once the server peer has committed them.
    recording = await wait_until(lambda: ready(rec_hub, meeting_id, "alice"), timeout=60,
                                 interval=0.2, what="getRecording ready")
    assert [f["kind"] for f in recording["files"]] == ["mix", "track", "track"]
    mixed = recording["files"][0]
    mix_path = storage.local_path(meeting_id, "mix.ogg")
    assert mix_path is not None
    _, mix_seconds, _ = decoded(mix_path)
    meeting_s = mixed["durationMs"] / 1000
    print(f"\nmix: {mix_seconds:.2f} s decoded, meeting {meeting_s:.2f} s "
          f"(wall clock from create to end {ended - started:.2f} s)")
    assert abs(mix_seconds - meeting_s) < 0.5
    assert -0.5 < ended - started - meeting_s < 5  # startMeeting comes after create
    mix_text = await asyncio.to_thread(decode_file_direct, str(mix_path))
    wer = word_error_rate(f"{WEATHER} {WINDOW}", mix_text)
    print(f"mix: pocketsphinx {mix_text!r}: WER {wer:.2f}")
    assert wer <= 0.5
    files = [f for f in storage.files(meeting_id) if f.meta.kind == "track"]
    assert storage.pending(meeting_id) == []
    by_peer: dict[str, StoredFile] = {f.meta.peer_id: f for f in files}
    assert len(files) == 2 and set(by_peer) == {alice.peer_id, bob.peer_id}
    said = {alice.peer_id: WEATHER, bob.peer_id: WINDOW}
    users = {alice.peer_id: "alice", bob.peer_id: "bob"}
    for peer_id, stored in by_peer.items():
        meta = stored.meta
        path = storage.local_path(meeting_id, stored.name)
        assert path is not None and meta.user_id == users[peer_id]
        assert meta.mime_type == "audio/ogg; codecs=opus" and meta.bytes == stored.size > 0
        first_s, seconds, channels = decoded(path)
        print(f"\n{users[peer_id]}: {stored.name} starts {meta.start_ms} ms, "
              f"{meta.duration_ms} ms, decoded {seconds:.2f} s from {first_s:.2f} s, "
              f"{stored.size} bytes")
        # On the meeting's clock: they joined within seconds of its start.
        assert 0 <= meta.start_ms < 15_000
        assert abs(first_s - meta.start_ms / 1000) < 0.05
        # Sane durations: at least the sentence, and what decodes is what the metadata says
        # (aiortc sends without gaps, so the two agree to the pre-skip and a frame).
        assert lengths[peer_id] - 0.2 <= meta.duration_ms / 1000 < lengths[peer_id] + 1
        assert abs(seconds - meta.duration_ms / 1000) < 0.1
        assert channels == 2
        text = await asyncio.to_thread(decode_file_direct, str(path))
        words = set(normalise(text))
        own = len(words & set(normalise(said[peer_id])))
        other = max(len(words & set(normalise(t))) for p, t in said.items() if p != peer_id)
        print(f"  pocketsphinx: {text!r} ({own} own words, {other} of the other speaker)")
        assert own >= 3 and own > other


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_leaver_s_file_is_kept_during_the_meeting_and_the_room_hears_recording_stop(
    rec_hub: HubHandle,
) -> None:
    """A participant who leaves mid-meeting: their track file is finished and listed at once
    (state still ``recording``); a server peer that shuts down (the worker stops) tells the
    room ``recording: stopped`` before it goes."""
    meeting_id, room_id = await rec_hub.create_room(host="alice", invite=("bob",),
                                                    transcription=True, recordingEnabled=True)
    alice = PeerClient(bot(rec_hub, rec_hub.mint_token(room_id, "alice", "host"),
                           audio=ToneSpec()))
    bob = PeerClient(bot(rec_hub, rec_hub.mint_token(room_id, "bob"), audio=ToneSpec()))
    with alice.messages() as alice_sub:
        async with alice:
            async with recorder_worker(rec_hub) as worker:
                async with bob:
                    session = await wait_until(lambda: worker.sessions.get(room_id),
                                               timeout=20, what="the server peer in the room")
                    assert await recording_frames(alice, alice_sub, 1) == ["recording"]
                    recorder = session.recorder
                    assert recorder is not None

                    def both_recorded() -> bool:
                        tracks = recorder.open_tracks.values()
                        return len(tracks) == 2 and all(w.packets >= 50 for w in tracks)

                    await wait_until(both_recorded, timeout=30, interval=0.1,
                                     what="a second of both participants recorded")
                    # Transcription rides along: the same uplink feeds both consumers.
                    assert bob.peer_id in session.pipelines
                    await bob.leave()
                value = await wait_until(lambda: _listed(rec_hub, meeting_id), timeout=15,
                                         interval=0.1, what="bob's file listed after he left")
                assert value["state"] == "recording"
                [track] = value["files"]
                assert track["userId"] == "bob" and track["durationMs"] >= 1000
            # The worker stopped with alice still in the room (after the "recording" frames
            # the server peer repeats for each newcomer).
            states = await recording_frames(alice, alice_sub, 0, until="stopped")
            assert states[-1] == "stopped" and set(states[:-1]) <= {"recording"}


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_hubs_own_tap_process_records_into_the_hubs_directory(tmp_path: Path) -> None:
    """``serve``'s shape: the tap runs in the hub's child process; it writes where the hub
    serves from (``recording.dir``), and the recording becomes ready with a track and a
    mix that download through the hub."""
    hub = await start_hub(test_settings(tap={"enabled": True},
                                        recording={"dir": str(tmp_path / "rec")}))
    try:
        meeting_id, room_id = await hub.create_room(host="alice", recordingEnabled=True)
        alice = PeerClient(bot(hub, hub.mint_token(room_id, "alice", "host"),
                               audio=ToneSpec()))
        with alice.messages() as sub:
            async with alice:
                assert await recording_frames(alice, sub, 1, until="recording") == \
                    ["recording"]
                storage = DirectoryStorage(hub.settings.recording.dir)
                await wait_until(lambda: storage.pending(meeting_id), timeout=20,
                                 what="alice's track being written")
                alice.send(protocol.End())
                value = await wait_until(lambda: ready(hub, meeting_id, "alice"), timeout=60,
                                         interval=0.2, what="getRecording ready")
        assert [f["kind"] for f in value["files"]] == ["mix", "track"]
        session = await hub.session()
        for entry in value["files"]:
            async with session.get(entry["url"], headers={"Range": "bytes=0-3"}) as resp:
                assert resp.status == 206 and await resp.read() == b"OggS"
    finally:
        await hub.aclose()


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_kill_9_of_the_recorder_mid_meeting_continues_in_a_new_part(
    tmp_path: Path,
) -> None:
    """The hub's tap process is killed (SIGKILL) while it records: its successor joins and
    records on in a new part; after the meeting the dead part is salvaged up to its last page,
    both parts are listed on the meeting clock, the mix covers the meeting, and the gap
    between the parts is bounded by the tap's failover bound."""
    hub = await start_hub(test_settings(tap={"enabled": True},
                                        recording={"dir": str(tmp_path / "rec"),
                                                   "stale_after_s": 3.0}))
    try:
        meeting_id, room_id = await hub.create_room(host="alice", recordingEnabled=True)
        storage = DirectoryStorage(hub.settings.recording.dir)
        host = hub.app[TAP_HOST_KEY]
        alice = PeerClient(bot(hub, hub.mint_token(room_id, "alice", "host"),
                               audio=ToneSpec()))
        async with alice:
            first = await wait_until(
                lambda: [p for p in storage.pending(meeting_id)
                         if storage.abandoned(meeting_id, p.name)[0].stat().st_size > 8_000],
                timeout=30, interval=0.1, what="alice's first part a few pages long")
            pid = host.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            second = await wait_until(
                lambda: [p for p in storage.pending(meeting_id)
                         if p.name != first[0].name], timeout=40, interval=0.1,
                what="a new part from the successor")
            print(f"\nnew part {second[0].name} {time.monotonic() - killed:.1f} s after the kill")
            # Let the new part hold some audio, then end the meeting.
            await wait_until(
                lambda: storage.abandoned(meeting_id, second[0].name)[0].stat().st_size > 8_000,
                timeout=30, interval=0.1, what="the new part a few pages long")
            alice.send(protocol.End())
            value = await wait_until(lambda: ready(hub, meeting_id, "alice"), timeout=60,
                                     interval=0.2, what="getRecording ready")
        mixed, *parts = value["files"]
        assert mixed["kind"] == "mix" and len(parts) == 2
        assert all((t["peerId"], t["userId"]) == (alice.peer_id, "alice") for t in parts)
        before, after = sorted(parts, key=lambda t: t["startMs"])
        gap_ms = after["startMs"] - (before["startMs"] + before["durationMs"])
        print(f"part 1: {before['startMs']} ms + {before['durationMs']} ms; part 2 from "
              f"{after['startMs']} ms; gap {gap_ms} ms; mix {mixed['durationMs']} ms")
        assert 0 < gap_ms < 15_000
        assert after["startMs"] + after["durationMs"] <= mixed["durationMs"] + 500
    finally:
        await hub.aclose()


async def _listed(hub: HubHandle, meeting_id: str) -> dict[str, Any] | None:
    """getRecording's value once it lists a file."""
    status, body = await hub.call("recordings/getRecording", {"meetingId": meeting_id},
                                  user="alice")
    assert status == 200, body
    return body["value"] if body["value"]["files"] else None  # type: ignore[no-any-return]


async def ready(hub: HubHandle, meeting_id: str, user: str) -> dict[str, Any] | None:
    """getRecording's value once its state is ``ready`` (None before; fails on ``failed``)."""
    status, body = await hub.call("recordings/getRecording", {"meetingId": meeting_id},
                                  user=user)
    assert status == 200, body
    assert body["value"]["state"] != "failed", body
    return body["value"] if body["value"]["state"] == "ready" else None  # type: ignore[no-any-return]


def _seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.rate
