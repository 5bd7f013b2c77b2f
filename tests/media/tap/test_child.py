"""A recogniser process on its own: a real spawned child running :func:`child_main`, driven
over its socket pair with :mod:`media.tap.procmsg` frames, without a ``ProcessTranscriber``."""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import time
from collections import deque
from collections.abc import Iterator, Mapping
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from media.tap import procmsg
from media.tap.child import FrameReader, child_main
from media.tap.procmsg import Audio, Begin, End, Failed, Progress, Quit, Ready, Result
from media.tap.transcriber import BYTES_PER_SECOND
from tests.media.tap.test_transcriber import COUNTING, CountingEngine
from tests.waiting import wait_until


class IdleEngine(CountingEngine):
    """A :class:`CountingEngine` with set-up work for idle moments: three calls of 0.1 CPU
    seconds each. A final's text says how many it has had; option ``done`` is a file it
    creates after the third."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.idle_calls = 0
        self.done = Path(options["done"]) if options.get("done") else None

    def idle(self) -> bool:
        self.idle_calls += 1
        started = time.process_time()
        while time.process_time() - started < 0.1:
            pass
        if self.idle_calls == 3 and self.done is not None:
            self.done.touch()
        return self.idle_calls < 3

    def end(self, stream_id: str) -> str:
        super().end(stream_id)
        return f"idle {self.idle_calls}"


class Link:
    """The parent's end of the socket pair, blocking: send messages, receive them one by one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = FrameReader(sock)
        self._bodies: deque[bytes] = deque()

    def send(self, *messages: procmsg.ToChild) -> None:
        """All of ``messages`` in one write (so the child reads them as one batch if idle)."""
        self.sock.sendall(b"".join(procmsg.frame(m) for m in messages))

    def receive(self, timeout_s: float = 20.0) -> procmsg.ToParent:
        deadline = time.monotonic() + timeout_s
        while not self._bodies:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._reader.wait(remaining):
                raise TimeoutError("no message from the recogniser")
            self._bodies.extend(self._reader.read())
            if not self._bodies and self._reader.closed:
                raise EOFError("the recogniser closed its socket")
        return procmsg.decode_to_parent(self._bodies.popleft())

    def until_final(self) -> list[procmsg.ToParent]:
        """Messages up to and including the next final result or failure."""
        got = [self.receive()]
        while not (isinstance(got[-1], Failed) or isinstance(got[-1], Result) and got[-1].final):
            got.append(self.receive())
        return got


@contextlib.contextmanager
def recogniser(engine: str = COUNTING, options: Mapping[str, Any] | None = None,
               partial_interval_s: float = 0.0) -> Iterator[tuple[Link, BaseProcess]]:
    """A spawned recogniser process (as ``ProcessTranscriber`` starts it) and its link."""
    parent_sock, child_sock = socket.socketpair()
    process = multiprocessing.get_context("spawn").Process(
        target=child_main, daemon=True,
        args=(child_sock, engine, dict(options or {}), partial_interval_s))
    process.start()
    child_sock.close()
    try:
        yield Link(parent_sock), process
    finally:
        parent_sock.close()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


def test_a_child_says_ready_answers_each_segment_and_quits() -> None:
    half_second = bytes(BYTES_PER_SECOND // 2)
    with recogniser(partial_interval_s=0.1) as (link, process):
        assert link.receive() == Ready(process.pid or 0)
        link.send(Begin("s1", "seg-1"), *(Audio("s1", half_second[i:i + 3200])
                                          for i in range(0, len(half_second), 3200)),
                  End("s1"))
        got = link.until_final()
        final = got[-1]
        assert isinstance(final, Result) and final.segment == "seg-1"
        assert final.text == f"{len(half_second)} bytes"
        assert final.segment_audio_s == pytest.approx(0.5) and final.audio_s == pytest.approx(0.5)
        partials = [m for m in got[:-1] if isinstance(m, Result)]
        assert all(not p.final and p.stream == "s1" for p in partials)
        assert any(isinstance(m, Progress) and m.audio_s == pytest.approx(0.5) for m in got)
        link.send(Quit())
        process.join(10)
        assert process.exitcode == 0


def test_an_engine_error_fails_one_segment_and_the_process_lives_on() -> None:
    with recogniser(options={"fail": True}) as (link, process):
        assert isinstance(link.receive(), Ready)
        link.send(Begin("s1", "seg-1"), Audio("s1", bytes(3200)), End("s1"))
        (failed,) = [m for m in link.until_final() if not isinstance(m, Progress)]
        assert isinstance(failed, Failed) and failed.segment == "seg-1"
        assert "told to fail" in failed.error
        link.send(Begin("s1", "seg-2"))
        (failed,) = [m for m in link.until_final() if not isinstance(m, Progress)]
        assert isinstance(failed, Failed) and failed.segment == "seg-2"
        link.sock.shutdown(socket.SHUT_WR)  # the tap went away: the child ends on its own
        process.join(10)
        assert process.exitcode == 0


async def test_a_segment_end_is_handled_before_other_speakers_queued_audio(
    tmp_path: Path,
) -> None:
    """A batch holding one speaker's queued audio and another speaker's whole segment: the
    segment's final reports the process's audio total without the queued audio, so it was
    sent before that audio went to the (slow) engine."""
    second = bytes(BYTES_PER_SECOND)
    options = {"seconds_per_second": 0.5, "hold": str(tmp_path)}
    with recogniser(options=options) as (link, _process):
        assert isinstance(link.receive(), Ready)
        link.send(Begin("talker", "long"), Audio("talker", second))  # busy with this ...
        await wait_until(lambda: (tmp_path / "busy").exists(),
                         what="the engine busy with the talker's first second")
        link.send(Audio("talker", second), Begin("quick", "short"),  # ... while these queue
                  Audio("quick", second[:3200]), End("quick"))
        (tmp_path / "go").touch()
        short = link.until_final()[-1]
        assert isinstance(short, Result) and short.segment == "short"
        assert short.text == "3200 bytes" and short.audio_s <= 1.1 + 1e-6
        link.send(End("talker"))
        long = link.until_final()[-1]
        assert isinstance(long, Result) and long.text == f"{2 * len(second)} bytes"


async def test_idle_set_up_runs_while_nothing_arrives_and_is_not_counted_as_recognition(
    tmp_path: Path,
) -> None:
    done = tmp_path / "done"
    with recogniser("tests.media.tap.test_child:IdleEngine",
                    {"done": str(done)}) as (link, _process):
        assert isinstance(link.receive(), Ready)
        await wait_until(done.exists, timeout=10, what="three idle moments of set-up")
        link.send(Begin("s1", "seg-1"), End("s1"))
        final = link.until_final()[-1]
        assert isinstance(final, Result) and final.text == "idle 3"  # then it said "done"
        assert final.cpu_s < 0.15  # the 0.3 s of set-up is not recognition


def test_a_frame_that_is_not_a_message_ends_the_process() -> None:
    """The parent restarts a process whose socket closes; a bad frame is a bug on one side,
    and the child stops rather than guess."""
    with recogniser() as (link, process):
        assert isinstance(link.receive(), Ready)
        link.sock.sendall(procmsg.HEADER.pack(3) + b"\x93\xa1a")  # the old ("a", ...) tuple
        process.join(10)
        assert process.exitcode not in (0, None)
