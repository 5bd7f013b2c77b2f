"""Standalone tap workers (``python -m media.tap``, i.e. ``connvo-rtc tap``) against a hub
process with Redis state: ``kill -9`` of the worker serving a room mid-meeting. Another worker
must claim the room and its tap take over the dropped tap's seat (not wait out its resume
grace), transcription must continue, and the segments stored before the kill must still be
returned by the API. How long the takeover takes is measured by ``bench.tap --failover``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from media import FileSpec, PeerClient, PeerClientConfig
from signaling import protocol
from signaling.tapjobs import GROUP, STREAM
from signaling.testing.hub_process import HubProcess
from signaling.testing.meetings import api, join_token
from signaling.testing.ports import free_port
from signaling.testing.redis_server import RedisServer
from tests.waiting import wait_until

RECLAIM_BOUND_S = 15.0


@dataclass
class TapProcess:
    """One ``python -m media.tap`` worker."""

    worker_id: str
    redis_url: str
    hub_url: str
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    def start(self) -> None:
        fd, self.log_path = tempfile.mkstemp(prefix=f"{self.worker_id}-", suffix=".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "media.tap", "--redis", self.redis_url,
             "--hub-url", self.hub_url, "--worker-id", self.worker_id,
             "--pin-host", "127.0.0.1", "--reclaim-after", "10"],
            stdout=fd, stderr=fd)
        os.close(fd)

    def log(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path) as f:
            return f.read()[-20000:]
        return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def looping_speech(speech_dir: Path, tmp_path: Path) -> Iterator[Path]:
    both = tmp_path / "both.wav"
    subprocess.run(["sox", str(speech_dir / "weather.wav"), str(speech_dir / "window.wav"),
                    str(both)], check=True)
    yield both


async def serving_worker(redis_url: str) -> str | None:
    """The worker that holds the (only) tap job's claim."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        pending = await client.xpending_range(STREAM, GROUP, "-", "+", 10)
    finally:
        await client.aclose()
    return pending[0]["consumer"].decode() if pending else None


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc: children started by any thread)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_kill_9_of_the_tap_worker_hands_the_room_to_another(
    redis: RedisServer, looping_speech: Path,
) -> None:
    hub = HubProcess(free_port(), redis.url, ["--no-tap"])
    taps = [TapProcess(name, redis.url, hub.ws_url) for name in ("tap-a", "tap-b")]
    hub.start()
    try:
        for tap in taps:
            tap.start()
        await hub.wait_ready()
        status, body = await api(hub.base_url, "lifecycle/createMeeting", {
            "title": "failover", "participantEmails": [], "transcriptionEnabled": True})
        assert status == 200, body
        meeting_id = body["value"]["meetingId"]
        status, body = await api(hub.base_url, "lifecycle/startMeeting",
                                 {"meetingId": meeting_id})
        assert status == 200, body
        room_id = body["value"]["roomInfo"]["roomId"]
        config = PeerClientConfig(
            ws_url=hub.ws_url, token=join_token(room_id, "host", "host"),
            audio=FileSpec(str(looping_speech), loop=True), pin_host_addresses=("127.0.0.1",))
        async with PeerClient(config) as speaker:
            with speaker.messages() as messages:
                joined = await messages.wait_for(
                    protocol.PeerJoined, 40, lambda m: m.peer.role == "tap")
                first_tap = joined.peer.peer_id
                before = await messages.wait_for(protocol.Transcript, 40, lambda m: m.final)
                holder = await serving_worker(redis.url)
                victim = next(t for t in taps if t.worker_id == holder)
                assert victim.proc is not None
                children = children_of(victim.proc.pid)
                assert children  # its recogniser process (and multiprocessing's tracker)
                victim.proc.kill()  # SIGKILL: no leave, no renewals, children orphaned
                victim.proc.wait(10)
                # The dropped tap's seat is kept for the resume grace (20 s); the new tap must
                # take it over ('replaced'), not be refused until the grace ends
                # ('disconnected').
                left = await messages.wait_for(protocol.PeerLeft, RECLAIM_BOUND_S + 10,
                                               lambda m: m.peer_id == first_tap)
                assert left.reason == "replaced", left
                rejoined = await messages.wait_for(
                    protocol.PeerJoined, 10,
                    lambda m: m.peer.role == "tap" and m.peer.peer_id != first_tap)
                after = await messages.wait_for(protocol.Transcript, 30, lambda m: m.final)
        print(f"\ntap {holder} killed; another tap took its seat; first final after: "
              f"{after.text!r}")
        assert rejoined.peer.user_id == "tap"
        assert await serving_worker(redis.url) != holder
        status, body = await api(hub.base_url, "transcripts/getTranscript",
                                 {"meetingId": meeting_id})
        assert status == 200, body
        stored = [s["segmentId"] for s in body["value"]["segments"]]
        assert before.segment_id in stored and after.segment_id in stored
        # The killed worker's children noticed their parent's sockets close and exited.
        await wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children),
                         timeout=10, interval=0.1, what="the killed worker's children exiting")
    except BaseException:
        for tap in taps:
            print(f"----- {tap.worker_id} log -----\n{tap.log()}")
        raise
    finally:
        for tap in taps:
            tap.stop()
            with contextlib.suppress(OSError):
                os.unlink(tap.log_path)
        hub.cleanup()



@pytest.mark.parametrize("argv, message", [
    (["--hub-url", "http://hub/ws"], "--hub-url must be ws:// or wss://"),
    (["--hub-url", "ws://hub/ws", "--recognizer", "nope"], "unknown recognizer 'nope'"),
    (["--hub-url", "ws://hub/ws", "--processes", "0"], "processes must be 1..64"),
])
def test_cli_refuses_bad_settings_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    from signaling.cli import build_parser

    args = build_parser().parse_args(["tap", "--redis", "redis://127.0.0.1:1/0", *argv])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
