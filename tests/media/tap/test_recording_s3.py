"""Recording into S3-compatible storage, end to end: the hub (``serve``'s shape: its server
peer in a child process) records a meeting into a bucket on a real local S3 server that checks
every signature (moto_server); the recording becomes ``ready`` and its files download through
the hub's signed links, whole and by Range (a GetObject with that Range, streamed through).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from media import FileSpec, PeerClient, ToneSpec
from media.tap.pocketsphinx_backend import decode_file_direct
from media.testing.speech import WEATHER
from media.testing.wer import word_error_rate
from signaling import protocol
from signaling.app import TAP_HOST_KEY
from signaling.s3 import S3Client, S3Config
from signaling.testing.hub import start_hub, test_settings
from tests.media.tap.test_recording import bot, ready, recording_frames
from tests.support.s3_server import S3Server, s3_server
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def s3_settings(s3: S3Server, spool: Path, **recording: Any) -> dict[str, Any]:
    bucket = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(bucket)
    return {"dir": str(spool), "storage": "s3", "s3_bucket": bucket, "s3_prefix": "connvo/",
            "s3_endpoint_url": s3.url, "s3_region": "eu-west-1",
            "s3_access_key": s3.access_key, "s3_secret_key": s3.secret_key, **recording}


async def keys(config: S3Config, meeting_id: str) -> set[str]:
    client = S3Client(config)
    try:
        return {o.key.split("/", 2)[2] for o in await client.list(f"connvo/{meeting_id}/")}
    finally:
        await client.aclose()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_meeting_recorded_into_s3_is_ready_and_downloads_through_the_hub_with_range(
    s3: S3Server, speech_dir: Path, tmp_path: Path,
) -> None:
    """alice says a sentence; the host ends the meeting; the server peer's track and the mix
    are uploaded (track file + JSON sidecar per file, nothing left pending or in the spool);
    getRecording is ready; every file downloads through the hub whole, by range (206 with the
    right bytes) and past its end (416); pocketsphinx hears alice's sentence in the track."""
    hub = await start_hub(test_settings(tap={"enabled": True},
                                        recording=s3_settings(s3, tmp_path / "spool")))
    try:
        config = hub.settings.s3_config()
        assert config is not None
        meeting_id, room_id = await hub.create_room(host="alice", recordingEnabled=True)
        alice = PeerClient(bot(hub, hub.mint_token(room_id, "alice", "host"),
                               audio=FileSpec(str(speech_dir / "weather.wav"), loop=False)))
        with alice.messages() as sub:
            async with alice:
                assert await recording_frames(alice, sub, 1, until="recording") == \
                    ["recording"]
                # The note of alice's track is in the bucket while it is written.
                await wait_until(lambda: _has(config, meeting_id, "incomplete/"), timeout=20,
                                 interval=0.2, what="alice's track pending in the bucket")
                # Her whole sentence sent (20 ms a packet) before the meeting ends.
                packets = int(_seconds(speech_dir / "weather.wav") / 0.02) - 5
                await wait_until(lambda: _sent(alice, packets), timeout=30, interval=0.2,
                                 what="alice's whole sentence sent")
                alice.send(protocol.End())
                value = await wait_until(lambda: ready(hub, meeting_id, "alice"), timeout=60,
                                         interval=0.2, what="getRecording ready")
        assert [f["kind"] for f in value["files"]] == ["mix", "track"]
        mixed, track = value["files"]
        assert track["userId"] == "alice" and track["bytes"] > 10_000
        stored = await keys(config, meeting_id)
        name = track["url"].split("?")[0].rsplit("/", 1)[1]
        assert stored == {"tracks/mix.ogg", "tracks/mix.ogg.json", f"tracks/{name}",
                          f"tracks/{name}.json"}, stored
        assert not [p for p in (tmp_path / "spool").rglob("*") if p.is_file()
                    and p.name != ".lock"], "the spool keeps nothing once uploaded"
        session = await hub.session()
        for entry in value["files"]:
            async with session.get(entry["url"]) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "audio/ogg"
                assert resp.headers["Accept-Ranges"] == "bytes"
                whole = await resp.read()
            assert len(whole) == entry["bytes"] and whole[:4] == b"OggS"
            size = len(whole)
            for header, part in [("bytes=100-1099", (100, 1100)), ("bytes=-500", (size - 500,
                                 size)), (f"bytes={size - 10}-", (size - 10, size))]:
                async with session.get(entry["url"], headers={"Range": header}) as resp:
                    assert resp.status == 206, header
                    assert resp.headers["Content-Range"] == \
                        f"bytes {part[0]}-{part[1] - 1}/{size}"
                    assert await resp.read() == whole[part[0]:part[1]]
            async with session.get(entry["url"], headers={"Range": f"bytes={size}-"}) as resp:
                assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{size}"
            (tmp_path / entry["kind"]).write_bytes(whole)
        with av.open(str(tmp_path / "mix")) as container:
            mix_s = sum(f.samples for f in container.decode(audio=0)) / 48_000
        assert abs(mix_s - mixed["durationMs"] / 1000) < 0.5
        text = await asyncio.to_thread(decode_file_direct, str(tmp_path / "track"))
        wer = word_error_rate(WEATHER, text)
        print(f"\ntrack from S3 through the hub: {len(whole)} bytes; pocketsphinx {text!r}, "
              f"WER {wer:.2f}; mix {mix_s:.2f} s")
        assert wer <= 0.5
    finally:
        await hub.aclose()


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_kill_9_of_the_recorder_writing_to_s3_salvages_its_spooled_part(
    s3: S3Server, tmp_path: Path,
) -> None:
    """The hub's tap process is killed (SIGKILL) while it records into S3: its part is only
    in its local spool. A storage on the machine (the restarted tap's, or the hub's) finds the
    dead owner's spool, uploads the part for salvage; the successor records a new part; after
    the meeting both parts are stored with alice as their owner and the mix covers them."""
    hub = await start_hub(test_settings(
        tap={"enabled": True},
        recording=s3_settings(s3, tmp_path / "spool", stale_after_s=3.0)))
    try:
        config = hub.settings.s3_config()
        assert config is not None
        meeting_id, room_id = await hub.create_room(host="alice", recordingEnabled=True)
        host: Any = hub.app[TAP_HOST_KEY]
        alice = PeerClient(bot(hub, hub.mint_token(room_id, "alice", "host"),
                               audio=ToneSpec()))
        async with alice:
            first = await wait_until(lambda: _spooled(tmp_path / "spool", 8_000), timeout=30,
                                     interval=0.1, what="alice's first part a few pages long")
            pid = host.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            await wait_until(lambda: _has(config, meeting_id, f"incomplete/{first.name}",
                                          exact=True), timeout=60, interval=0.2,
                             what="the dead part uploaded from its spool for salvage")
            print(f"\ndead part uploaded {time.monotonic() - killed:.1f} s after the kill")
            await wait_until(lambda: _spooled(tmp_path / "spool", 8_000, not_named=first.name),
                             timeout=40, interval=0.1, what="the successor's part")
            alice.send(protocol.End())
            value = await wait_until(lambda: ready(hub, meeting_id, "alice"), timeout=90,
                                     interval=0.3, what="getRecording ready")
        mixed, *parts = value["files"]
        assert mixed["kind"] == "mix" and len(parts) == 2
        assert all((t["peerId"], t["userId"]) == (alice.peer_id, "alice") for t in parts)
        before, after = sorted(parts, key=lambda t: t["startMs"])
        gap_ms = after["startMs"] - (before["startMs"] + before["durationMs"])
        print(f"part 1: {before['startMs']} ms + {before['durationMs']} ms; part 2 from "
              f"{after['startMs']} ms; gap {gap_ms} ms; mix {mixed['durationMs']} ms")
        assert before["durationMs"] >= 500 and 0 < gap_ms < 15_000
        assert not await _has(config, meeting_id, "incomplete/")
    finally:
        await hub.aclose()


async def _sent(client: PeerClient, packets: int) -> bool:
    snapshot = await client.snapshot()
    return sum(r.packets for p in snapshot.remote_peers for r in p.rtp
               if r.direction == "outbound" and r.kind == "audio") >= packets


def _spooled(spool: Path, min_bytes: int, not_named: str = "") -> Path | None:
    for path in spool.rglob("*.ogg"):
        try:
            if path.name != not_named and path.stat().st_size > min_bytes:
                return path
        except OSError:
            continue
    return None


async def _has(config: S3Config, meeting_id: str, what: str, *, exact: bool = False) -> bool:
    found = await keys(config, meeting_id)
    return what in found if exact else any(k.startswith(what) for k in found)


def _seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.rate
