"""The durable mix across real hub worker processes sharing Redis: the worker that mixes is
killed (SIGKILL) in the middle of the mix; its mix child dies with it; another worker reclaims
the job and the recording still becomes ``ready`` -- with the recordings in a shared directory
and in an S3 bucket (a real local S3 server checking signatures)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from signaling.mixjobs import MixJob, RedisMixJobs
from signaling.recording_s3 import S3Storage
from signaling.recording_storage import DirectoryStorage, RecordingStorage
from signaling.testing.hub_process import run_workers
from signaling.testing.meetings import api
from signaling.testing.redis_server import RedisServer
from tests.signaling.test_recordings import mixdown_children, record_track
from tests.support.s3_server import REGION, S3Server, s3_server
from tests.waiting import wait_until

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["directory", "s3"])
async def test_a_hub_worker_killed_mid_mix_leaves_the_mix_to_another_worker(
    redis: RedisServer, tmp_path: Path, kind: str, request: pytest.FixtureRequest,
) -> None:
    env = {"CONNVO_RTC_RECORDING_DIR": str(tmp_path / "rec"),
           "CONNVO_RTC_RECORDING_MIX_RECLAIM_AFTER_S": "2"}
    storage: RecordingStorage
    if kind == "s3":
        server: S3Server = request.getfixturevalue("s3")
        bucket = f"mix-{secrets.token_hex(4)}"
        server.create_bucket(bucket)
        env |= {"CONNVO_RTC_RECORDING_STORAGE": "s3", "CONNVO_RTC_RECORDING_S3_BUCKET": bucket,
                "CONNVO_RTC_RECORDING_S3_ENDPOINT_URL": server.url,
                "CONNVO_RTC_RECORDING_S3_REGION": REGION,
                "CONNVO_RTC_RECORDING_S3_ACCESS_KEY": server.access_key,
                "CONNVO_RTC_RECORDING_S3_SECRET_KEY": server.secret_key}
        storage = S3Storage(server.config(bucket), tmp_path / "test-spool")
    else:
        storage = DirectoryStorage(tmp_path / "rec")
    client = aioredis.from_url(redis.url)
    try:
        async with run_workers(redis.url, 2, env=env) as workers:
            base = workers[0].base_url
            status, body = await api(base, "lifecycle/createMeeting", {
                "title": "recorded", "participantEmails": [], "recordingEnabled": True})
            assert status == 200, body
            meeting_id = body["value"]["meetingId"]
            status, body = await api(base, "lifecycle/startMeeting", {"meetingId": meeting_id})
            assert status == 200, body
            room_id = body["value"]["roomInfo"]["roomId"]
            now = int(time.time() * 1000)
            record_track(storage, meeting_id, "p_1.1.abc.ogg",  # type: ignore[arg-type]
                         started_at_ms=now - HOUR_MS)
            await wait_until(lambda: storage.list_files(meeting_id), 20,
                             what="the track stored (S3: uploaded)")
            # Queued as the end of the room queues it, for an hour-long meeting: a mix long
            # enough to be killed in the middle (the room's own job is then a duplicate).
            assert await RedisMixJobs(client).enqueue(MixJob(
                job_id="mix_long", meeting_id=meeting_id, room_id=room_id,
                started_at_ms=now - HOUR_MS, ended_at_ms=now))
            status, body = await api(base, "lifecycle/endMeeting", {"meetingId": meeting_id})
            assert status == 200, body
            pids = {w.proc.pid: w for w in workers if w.proc is not None}
            [child] = await wait_until(lambda: mixdown_children(set(pids)), 30, interval=0.05,
                                       what="a worker's mix child running")
            parent = next(pid for pid in pids if child in mixdown_children({pid}))
            mixer, survivor = pids[parent], next(w for w in workers if w is not pids[parent])
            mixer.kill()  # SIGKILL, mid-mix
            killed = time.monotonic()
            await wait_until(lambda: not _alive(child), 10, what="the mix child dying with it")

            async def ready() -> dict[str, Any] | None:
                status, body = await api(survivor.base_url, "recordings/getRecording",
                                         {"meetingId": meeting_id})
                assert status == 200, body
                assert body["value"]["state"] != "failed", body
                return body["value"] if body["value"]["state"] == "ready" else None  # type: ignore[no-any-return]

            value = await wait_until(ready, 90, interval=0.3, what="the recording ready")
            print(f"\n{kind}: mix redone by the other worker, ready "
                  f"{time.monotonic() - killed:.1f} s after the kill")
            mixed, track = value["files"]
            assert mixed["kind"] == "mix" and mixed["durationMs"] == HOUR_MS
            assert track["userId"] == "bob"
            log = survivor.log()
            assert "mix=mix_long claimed" in log and "(delivery 2)" in log, log[-3000:]
            assert "mix of 1 track(s) ready" in log
    finally:
        await client.aclose()
        await storage.aclose()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
