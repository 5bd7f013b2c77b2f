"""The hub's own tap in its own process (``connvo-rtc serve``): real hub, real tap process, real
recogniser processes, real aiortc peers on loopback.

The story (issue 14): the in-process tap ran its audio pipeline on the hub's event loop, so on
a busy machine signalling waited for audio and audio for signalling (a final 2.6 s after the
end of speech at load 11, the hub's loop starved); and the first utterance of a meeting paid
for starting the recogniser processes. Now the hub starts a tap process whose recognisers are
warm before any job, restarts it when it dies, and stops it in stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from media import FileSpec, PeerClient, PeerClientConfig
from media.tap.host import TapHost
from media.tap.worker import TapWorker
from signaling import protocol
from signaling.app import TAP_HOST_KEY
from signaling.redis_store import connect
from signaling.tapjobs import MemoryTapJobs, RedisTapJobs, TapJob, TapJobs
from signaling.testing.hub import HubHandle, start_hub, test_settings
from signaling.testing.hub_process import HubProcess
from signaling.testing.meetings import api, join_token
from signaling.testing.ports import free_port
from signaling.testing.redis_server import RedisServer
from tests.media.tap.test_tap_hub import bot
from tests.support.wsclient import WsClient
from tests.waiting import wait_until

REPO = Path(__file__).parents[3]


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def tap_in(client: PeerClient) -> str | None:
    """The peer id of the tap in ``client``'s room."""
    return next((p.peer_id for p in client.room_peers.values() if p.role == "tap"), None)


@pytest.fixture
async def tap_hub() -> AsyncIterator[HubHandle]:
    """A hub with its tap, as ``connvo-rtc serve`` runs it (a child process)."""
    handle = await start_hub(test_settings(tap={"enabled": True}))
    try:
        yield handle
    finally:
        await handle.aclose()


@pytest.fixture
def looping_speech(speech_dir: Path, tmp_path: Path) -> Iterator[Path]:
    both = tmp_path / "both.wav"
    subprocess.run(["sox", str(speech_dir / "weather.wav"), str(speech_dir / "window.wav"),
                    str(both)], check=True)
    yield both


async def warm(hub: HubHandle) -> TapHost:
    host = hub.app[TAP_HOST_KEY]
    await wait_until(lambda: host.warm, timeout=60, interval=0.05,
                     what="the tap process's recognisers being warm")
    return host


# --------------------------------------------------------------------------- the process


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_hubs_tap_is_a_process_of_its_own_warm_before_the_first_job(
    tap_hub: HubHandle, speech_dir: Path,
) -> None:
    host = await warm(tap_hub)
    # Its own process (a child of the hub's), and no tap worker in the hub's.
    assert host.pid is not None and host.pid != os.getpid()
    assert parent_of(host.pid) == os.getpid()
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, TapWorker)]
    # Warm before there was any job: its recognisers run (children of the tap process) and
    # have each decoded their warm-up burst, and nothing has been claimed yet.
    recognisers = list(host.recognisers)
    assert recognisers and all(parent_of(pid) == host.pid for pid in recognisers)
    assert host.claimed == 0
    _, room_id = await tap_hub.create_room(host="alice", transcription=True)
    config = bot(tap_hub, tap_hub.mint_token(room_id, "alice", "host"),
                 audio=FileSpec(str(speech_dir / "jfk.wav"), loop=False))
    async with PeerClient(config) as alice:
        with alice.messages() as messages:
            final = await messages.wait_for(protocol.Transcript, 45,
                                            lambda m: m.final and m.text)
    assert final.peer_id == alice.peer_id
    # The processes that were warm decoded it: nothing was started for the job.
    assert host.claimed == 1 and host.recognisers == recognisers and host.restarts == 0


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_killed_tap_process_is_restarted_and_transcription_resumes(
    tap_hub: HubHandle, looping_speech: Path,
) -> None:
    host = await warm(tap_hub)
    _, room_id = await tap_hub.create_room(host="alice", transcription=True)
    config = bot(tap_hub, tap_hub.mint_token(room_id, "alice", "host"),
                 audio=FileSpec(str(looping_speech), loop=True))
    async with PeerClient(config) as alice:
        with alice.messages() as messages:
            # The tap was warm and took the job at once: it may be in the room before alice.
            first_tap = await wait_until(lambda: tap_in(alice), timeout=30, interval=0.05,
                                         what="the tap in alice's room")
            await messages.wait_for(protocol.Transcript, 45, lambda m: m.final and m.text)
            victim, old_recognisers = host.pid, list(host.recognisers)
            assert victim is not None
            os.kill(victim, signal.SIGKILL)  # no leave, no goodbye: its recognisers orphaned
            # Another tap process, warm, whose tap takes over the dead one's seat at once (its
            # job was released, not left to be reclaimed after reclaim_after_s).
            await wait_until(lambda: host.restarts == 1 and host.warm and host.pid != victim,
                             timeout=60, interval=0.05, what="a new, warm tap process")
            left = await messages.wait_for(protocol.PeerLeft, 30,
                                           lambda m: m.peer_id == first_tap)
            assert left.reason == "replaced", left
            await messages.wait_for(protocol.PeerJoined, 10, lambda m: m.peer.role == "tap")
            after = await messages.wait_for(protocol.Transcript, 45,
                                            lambda m: m.final and m.text)
    assert after.peer_id == alice.peer_id
    # The dead process's recognisers saw their sockets close and exited; the hub is fine.
    await wait_until(lambda: not any(alive(pid) for pid in old_recognisers), timeout=15,
                     interval=0.05, what="the killed tap's recognisers exiting")
    async with aiohttp.ClientSession() as session, \
            session.get(tap_hub.base_url + "/metrics") as resp:
        text = await resp.text()
    assert "connvo_tap_process_restarts_total 1.0" in text
    assert "connvo_tap_process_warm 1.0" in text


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_serve_runs_its_tap_in_a_child_and_stops_it_in_stages() -> None:
    """``connvo-rtc serve`` as an operator runs it: the tap is a child process of the hub with
    its own PID, and SIGTERM to the hub stops both (no orphan)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNVO_RTC_")}
    env["CONNVO_RTC_AUTH_SECRET"] = "tap-process-test-" + "t" * 32
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signaling.cli", "serve", "--port", str(free_port()), cwd=REPO,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        async def line(pattern: str) -> re.Match[str]:
            assert proc.stderr is not None
            async with asyncio.timeout(60):
                while text := (await proc.stderr.readline()).decode():
                    seen.append(text)
                    if match := re.search(pattern, text):
                        return match
            raise AssertionError(f"no {pattern!r} in the log")

        tap_pid = int((await line(r"tap process (\d+) started"))[1])
        await line(r"tap process \d+: recognisers warm")
        assert tap_pid != proc.pid and parent_of(tap_pid) == proc.pid
        assert b"media.tap.hosted" in cmdline(tap_pid)
        os.kill(proc.pid, signal.SIGTERM)
        await line(r"tap process stopped")
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert not alive(tap_pid)
        rest = (await proc.stderr.read()).decode()
        assert "Traceback" not in "".join(seen) + rest
    except BaseException:
        print("".join(seen))
        raise
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_with_redis_the_tap_process_gets_its_jobs_through_the_hub(
    redis: RedisServer, speech_dir: Path,
) -> None:
    """With Redis state the tap process still needs no Redis of its own (no credentials handed
    to it): its claims and renewals go through the hub, to the Redis stream."""
    hub = HubProcess(free_port(), redis.url, env={"CONNVO_RTC_TAP_ENABLED": "true"})
    hub.start()
    try:
        await hub.wait_ready()
        status, body = await api(hub.base_url, "lifecycle/createMeeting", {
            "title": "redis tap", "participantEmails": [], "transcriptionEnabled": True})
        assert status == 200, body
        meeting_id = body["value"]["meetingId"]
        status, body = await api(hub.base_url, "lifecycle/startMeeting",
                                 {"meetingId": meeting_id})
        assert status == 200, body
        room_id = body["value"]["roomInfo"]["roomId"]
        config = PeerClientConfig(
            ws_url=hub.ws_url, token=join_token(room_id, "host", "host"),
            audio=FileSpec(str(speech_dir / "jfk.wav"), loop=False),
            pin_host_addresses=("127.0.0.1",))
        async with PeerClient(config) as host:
            with host.messages() as messages:
                final = await messages.wait_for(protocol.Transcript, 60,
                                                lambda m: m.final and m.text)
        assert final.peer_id == host.peer_id
        log = hub.log()
        assert re.search(r"tap process \d+: recognisers warm", log)
        assert "in-memory" not in log and "Traceback" not in log
    except BaseException:
        print(hub.log())
        raise
    finally:
        hub.cleanup()


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_an_inline_tap_for_benchmarks_runs_on_the_hubs_loop() -> None:
    """``create_app(inline_tap=True)``: what benchmarks that patch the pipeline use. No tap
    process; the worker is on the hub's own loop and still serves rooms."""
    hub = await start_hub(test_settings(tap={"enabled": True}), inline_tap=True)
    try:
        assert TAP_HOST_KEY not in hub.app
        _, room_id = await hub.create_room(host="alice", transcription=True)
        alice = await WsClient.connect(hub.ws_url)
        try:
            await alice.join(hub.mint_token(room_id, "alice", "host"))
            if not any(p.role == "tap" for p in alice.joined.peers):  # type: ignore[union-attr]
                joined = await alice.expect(protocol.PeerJoined, timeout=30)
                assert joined.peer.role == "tap"
        finally:
            await alice.aclose()
        gc.collect()
        assert any(o.warm for o in gc.get_objects() if isinstance(o, TapWorker))
    finally:
        await hub.aclose()


# --------------------------------------------------------------------------- jobs


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_released_job_is_claimable_at_once(kind: str,
                                                   request: pytest.FixtureRequest) -> None:
    """The hub releases the jobs of a tap process that died, so its successor need not wait
    out reclaim_after_s; a release by anyone but the holder changes nothing."""
    client = None
    jobs: TapJobs
    if kind == "memory":
        jobs = MemoryTapJobs(reclaim_after_s=60)
    else:
        server: RedisServer = request.getfixturevalue("redis")
        client = connect(server.url)
        jobs = RedisTapJobs(client, reclaim_after_s=60)
    try:
        assert await jobs.enqueue(TapJob(job_id="tap_1", room_id="room_ab",
                                         meeting_id="meeting_ab", token="t", started_at_ms=5))
        held = await jobs.claim("w1", timeout_s=1)
        assert held is not None
        await jobs.release("w2", held)  # not w2's
        assert await jobs.claim("w2", timeout_s=0.2) is None
        await jobs.release("w1", held)
        again = await jobs.claim("w2", timeout_s=1)
        assert again is not None and again.job_id == "tap_1"
        assert await jobs.renew("w2", again) and not await jobs.renew("w1", held)
    finally:
        if client is not None:
            await client.aclose()
