"""Storing a recording: a directory side by side with S3 (a local moto_server, SigV4 checked),
for one hour of one participant's track (about 29 MB at the recorder's ~8 kB/s).

For each storage: the time from ``commit`` until the file is listed (stored), this process's
CPU time meanwhile, and the event loop's worst lateness while it happens (a 10 ms ticker): the
upload must not block the loop the recorder and the hub run on. Then the same file stored by
``put_file`` (the mix's way, awaited), and a ranged read of 1 MiB from the middle (a download
through the hub). The S3 figures include moto_server's own cost (a Python server on the same
2 cores): a real S3 or MinIO is faster. Run: ``.venv/bin/python -m bench.recording_storage``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Self

from signaling.recording_storage import RecordingStorage, TrackMeta, open_storage
from signaling.testing.s3_server import s3_server

BYTES = 29 * 1000 * 1000
META = TrackMeta(peer_id="p_1", user_id="alice", mime_type="audio/ogg; codecs=opus",
                 start_ms=0, duration_ms=3_600_000, packets=180_000)


class Lag:
    """The event loop's worst lateness on a 10 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - due)

    def __enter__(self) -> Self:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def measure(storage: RecordingStorage, data: bytes, scratch: Path) -> dict[str, float]:
    await storage.start()
    meeting = f"meeting_{secrets.token_hex(4)}"
    storage.begin(meeting, "p_1.1.aa.ogg").write_bytes(data)
    cpu, wall = time.process_time(), time.monotonic()
    with Lag() as lag:
        storage.commit(meeting, "p_1.1.aa.ogg", META)
        while not await storage.list_files(meeting):
            await asyncio.sleep(0.05)
        commit = (time.monotonic() - wall, time.process_time() - cpu, lag.worst)
    source = scratch / "mix.ogg"
    source.write_bytes(data)
    cpu, wall = time.process_time(), time.monotonic()
    with Lag() as lag:
        await storage.put_file(meeting, "mix.ogg", source, META)
        put = (time.monotonic() - wall, time.process_time() - cpu, lag.worst)
    wall = time.monotonic()
    got = b"".join([c async for c in storage.read(meeting, "mix.ogg", BYTES // 2,
                                                  BYTES // 2 + (1 << 20) - 1)])
    assert got == data[BYTES // 2:BYTES // 2 + (1 << 20)]
    ranged = time.monotonic() - wall
    await storage.aclose()
    return {"commit_s": commit[0], "commit_cpu_s": commit[1], "commit_lag_ms": commit[2] * 1000,
            "put_s": put[0], "put_cpu_s": put[1], "put_lag_ms": put[2] * 1000,
            "range_ms": ranged * 1000}


async def main() -> None:
    data = os.urandom(BYTES)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows["directory"] = await measure(open_storage(root / "dir"), data, root)
        with s3_server() as server:
            bucket = f"bench-{secrets.token_hex(4)}"
            server.create_bucket(bucket)
            rows["s3 (moto_server, 8 MiB parts)"] = await measure(
                open_storage(root / "spool", server.config(bucket)), data, root)
    print(f"\none participant-hour: {BYTES / 1e6:.0f} MB; load: {os.getloadavg()[0]:.2f}\n")
    print("| storage | commit -> listed | CPU (this process) | worst loop lag | put_file "
          "(mix) | its loop lag | 1 MiB range read |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['commit_s']:.2f} s | {r['commit_cpu_s']:.2f} s | "
              f"{r['commit_lag_ms']:.1f} ms | {r['put_s']:.2f} s | {r['put_lag_ms']:.1f} ms | "
              f"{r['range_ms']:.1f} ms |")


if __name__ == "__main__":
    asyncio.run(main())
