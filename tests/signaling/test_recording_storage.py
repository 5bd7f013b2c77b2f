"""One contract for recording storage, run against each implementation: a directory, and an
S3 bucket on a real local S3-compatible server that checks every request's signature
(moto_server). Then what only S3 has: uploads that fail are retried and lose nothing, a spool
left at shutdown (or by a killed writer) is uploaded by the next storage on the machine."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from signaling.recording_s3 import S3Storage
from signaling.recording_storage import (
    DirectoryStorage,
    RecordingStorage,
    TrackMeta,
    open_storage,
)
from signaling.s3 import S3Config
from tests.support.s3_server import S3Server, s3_server
from tests.waiting import wait_until

MIME = "audio/ogg; codecs=opus"


def meta(peer: str = "p_1", user: str = "alice") -> TrackMeta:
    return TrackMeta(peer_id=peer, user_id=user, mime_type=MIME, start_ms=120,
                     duration_ms=4000, packets=200)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def bucket_config(s3: S3Server, **options: object) -> S3Config:
    bucket = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(bucket)
    config = s3.config(bucket, prefix="deploy/recordings/")
    return S3Config(**{**config.__dict__, **options})  # type: ignore[arg-type]


@pytest.fixture(params=["directory", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[
        RecordingStorage]:
    if request.param == "directory":
        made = open_storage(tmp_path / "rec")
    else:
        s3_: S3Server = request.getfixturevalue("s3")
        made = open_storage(tmp_path / "spool", bucket_config(s3_, part_bytes=5 << 20),
                            heartbeat_s=0.5, sweep_s=0.5)
    await made.start()
    try:
        yield made
    finally:
        await made.aclose()
        await made.aclose()  # idempotent


async def stored(storage: RecordingStorage, meeting_id: str, name: str) -> bool:
    return any(f.name == name for f in await storage.list_files(meeting_id))


async def test_a_file_is_pending_while_written_then_listed_with_its_metadata(
    storage: RecordingStorage, tmp_path: Path,
) -> None:
    path = storage.begin("meeting_1", "p_1.1.aa.ogg")
    storage.note("meeting_1", "p_1.1.aa.ogg", meta())
    data = os.urandom(30_000)
    path.write_bytes(data)
    pending = await wait_until(lambda: storage.list_pending("meeting_1"), 10,
                               what="the file listed as pending")
    assert [p.name for p in pending] == ["p_1.1.aa.ogg"]
    assert await storage.list_files("meeting_1") == []

    committed = storage.commit("meeting_1", "p_1.1.aa.ogg", meta())
    assert committed.size == len(data) and committed.meta.bytes == len(data)
    await wait_until(lambda: stored(storage, "meeting_1", "p_1.1.aa.ogg"), 10,
                     what="the committed file listed")
    [listed] = await storage.list_files("meeting_1")
    assert (listed.name, listed.size) == ("p_1.1.aa.ogg", len(data))
    assert listed.meta == TrackMeta(peer_id="p_1", user_id="alice", mime_type=MIME,
                                    start_ms=120, duration_ms=4000, packets=200,
                                    bytes=len(data))
    await wait_until(lambda: _none_pending(storage, "meeting_1"), 10, what="nothing pending")
    assert await storage.stat("meeting_1", "p_1.1.aa.ogg") == listed
    assert await storage.stat("meeting_1", "p_1.1.zz.ogg") is None
    got = b"".join([c async for c in storage.read("meeting_1", "p_1.1.aa.ogg", 100, 20_099)])
    assert got == data[100:20_100]
    fetched = await storage.fetch("meeting_1", "p_1.1.aa.ogg", tmp_path)
    assert fetched is not None and fetched.read_bytes() == data
    assert await storage.fetch("meeting_1", "nothing.ogg", tmp_path) is None
    assert await storage.list_files("meeting_2") == []  # meetings apart


async def _none_pending(storage: RecordingStorage, meeting_id: str) -> bool:
    return not await storage.list_pending(meeting_id)


async def test_a_discarded_file_leaves_nothing(storage: RecordingStorage) -> None:
    storage.begin("meeting_1", "p_1.1.aa.ogg").write_bytes(b"")
    storage.note("meeting_1", "p_1.1.aa.ogg", meta())
    await wait_until(lambda: storage.list_pending("meeting_1"), 10, what="pending")
    storage.discard("meeting_1", "p_1.1.aa.ogg")
    await wait_until(lambda: _none_pending(storage, "meeting_1"), 10, what="nothing pending")
    assert await storage.list_files("meeting_1") == []


async def test_put_file_stores_a_large_local_file_when_it_returns(
    storage: RecordingStorage, tmp_path: Path,
) -> None:
    """The mix: stored when put_file returns (S3: a multipart upload)."""
    source = tmp_path / "mix-output.ogg"
    data = os.urandom(11 << 20)
    source.write_bytes(data)
    mix = TrackMeta(kind="mix", peer_id="", user_id="", mime_type=MIME, start_ms=0,
                    duration_ms=60_000, packets=0)
    put = await storage.put_file("meeting_1", "mix.ogg", source, mix)
    assert put.size == len(data) and not source.exists()
    assert await stored(storage, "meeting_1", "mix.ogg")
    assert b"".join([c async for c in storage.read("meeting_1", "mix.ogg", len(data) - 10,
                                                   len(data) - 1)]) == data[-10:]
    [listed] = await storage.list_files("meeting_1")
    assert listed.meta == msgspec.structs.replace(mix, bytes=len(data))


async def test_a_failed_mix_is_kept_with_its_reason(storage: RecordingStorage) -> None:
    assert await storage.failure("meeting_1") is None
    await storage.mark_failed("meeting_1", "mixdown exit 1: invalid data")
    assert await storage.failure("meeting_1") == "mixdown exit 1: invalid data"
    assert await storage.failure("meeting_2") is None


async def test_names_that_are_not_one_path_component_are_refused(
    storage: RecordingStorage,
) -> None:
    for bad in ("../x", "a/b", "", ".hidden", "x..y"):
        with pytest.raises(ValueError):
            storage.begin("meeting_1", bad)
        assert await storage.list_files(bad) == []
        assert await storage.stat("meeting_1", bad) is None


_KILLED_WRITER = """
import asyncio, json, os, signal, sys
from signaling.recording_storage import TrackMeta, open_storage
from signaling.s3 import S3Config
spec = json.loads(sys.argv[1])
async def main():
    s3 = S3Config(**spec["s3"]) if spec["s3"] else None
    storage = open_storage(spec["dir"], s3, heartbeat_s=0.2)
    path = storage.begin("meeting_1", "p_3.1.cc.ogg")
    storage.note("meeting_1", "p_3.1.cc.ogg", TrackMeta(peer_id="p_3", user_id="carol",
                 mime_type="audio/ogg", start_ms=0, duration_ms=0, packets=0))
    path.write_bytes(b"x" * 5000)
    while not await storage.list_pending("meeting_1"):
        await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""


async def test_a_writer_killed_mid_file_leaves_it_pending_with_its_note(
    storage: RecordingStorage, tmp_path: Path,
) -> None:
    """kill -9 of the process writing: the file stays pending, whose it is stays known, and
    its data can be fetched to be salvaged (S3: a storage on the same machine adopts the dead
    one's spool and uploads it)."""
    if isinstance(storage, DirectoryStorage):
        spec = {"dir": str(storage.root), "s3": None}
    else:
        assert isinstance(storage, S3Storage)
        spec = {"dir": str(storage.spool), "s3": storage.config.__dict__}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_WRITER, json.dumps(spec), stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]

    async def salvageable() -> tuple[Path | None, TrackMeta | None] | None:
        if not await storage.list_pending("meeting_1"):
            return None
        found = await storage.fetch_abandoned("meeting_1", "p_3.1.cc.ogg", tmp_path)
        return found if found[0] is not None else None

    path, note = await wait_until(salvageable, 20, what="the dead writer's file salvageable",
                                  interval=0.2)
    assert path is not None and path.read_bytes() == b"x" * 5000
    assert note is not None and (note.peer_id, note.user_id) == ("p_3", "carol")
    await storage.put_file("meeting_1", "p_3.1.cc.ogg", path, note)
    assert [f.meta.user_id for f in await storage.list_files("meeting_1")] == ["carol"]
    assert await storage.list_pending("meeting_1") == []


# ---------------------------------------------------------------------- S3 only


async def test_an_upload_that_fails_is_retried_and_the_spool_kept_until_it_succeeds(
    s3: S3Server, tmp_path: Path,
) -> None:
    """The bucket does not exist yet: every upload fails (404 NoSuchBucket), the file stays in
    the spool; once the bucket is there the retry stores it."""
    bucket = f"late-{secrets.token_hex(4)}"
    storage = S3Storage(s3.config(bucket), tmp_path / "spool", retry_max_s=0.5)
    try:
        path = storage.begin("meeting_1", "p_1.1.aa.ogg")
        path.write_bytes(b"opus" * 1000)
        storage.commit("meeting_1", "p_1.1.aa.ogg", meta())
        await wait_until(lambda: storage.retries >= 2, 10, what="two failed tries")
        assert path.exists() and storage.backlog == 1
        s3.create_bucket(bucket)
        await wait_until(lambda: storage.backlog == 0, 10, what="the upload")
        assert not path.exists()
        [listed] = await storage.list_files("meeting_1")
        assert listed.size == 4000 and listed.meta.user_id == "alice"
    finally:
        await storage.aclose()


async def test_a_spool_left_at_shutdown_is_uploaded_by_the_next_storage(
    s3: S3Server, tmp_path: Path,
) -> None:
    """Shutdown while the bucket refuses: the committed file stays in the spool (flush_s
    passes); the next storage on this machine adopts the folder and uploads it."""
    bucket = f"later-{secrets.token_hex(4)}"
    first = S3Storage(s3.config(bucket), tmp_path / "spool", flush_s=0.3, retry_max_s=0.2)
    first.begin("meeting_1", "p_1.1.aa.ogg").write_bytes(b"opus" * 500)
    first.commit("meeting_1", "p_1.1.aa.ogg", meta())
    await wait_until(lambda: first.retries >= 1, 10, what="a failed try")
    await first.aclose()
    left = list((tmp_path / "spool").rglob("p_1.1.aa.ogg*"))
    assert {p.name for p in left} == {"p_1.1.aa.ogg", "p_1.1.aa.ogg.meta.json"}
    s3.create_bucket(bucket)
    second = S3Storage(s3.config(bucket), tmp_path / "spool")
    try:
        await second.start()
        await wait_until(lambda: stored(second, "meeting_1", "p_1.1.aa.ogg"), 10,
                         what="the left file uploaded by the next storage")
        assert not list((tmp_path / "spool").rglob("p_1.1.aa.ogg*"))
    finally:
        await second.aclose()


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(("recording", "message"), [
    ({"storage": "ftp"}, 'recording.storage must be "directory" or "s3"'),
    ({"storage": "s3"}, 'recording.storage = "s3" needs recording.s3_bucket'),
    ({"storage": "s3", "s3_bucket": "b"},
     "needs recording.s3_access_key and recording.s3_secret_key"),
    ({"storage": "s3", "s3_bucket": "b", "s3_access_key": "a", "s3_secret_key": "s",
      "s3_endpoint_url": "minio:9000"}, "recording.s3_endpoint_url must be http(s)://"),
    ({"s3_part_mb": 4}, "recording.s3_part_mb must be 5..512"),
    ({"mix_concurrency": 0}, "recording.mix_concurrency must be 1..16"),
    ({"mix_reclaim_after_s": 1}, "recording.mix_reclaim_after_s must be 2..300"),
])
def test_bad_storage_settings_stop_the_hub_with_one_clear_line(
    recording: dict[str, object], message: str,
) -> None:
    from signaling.settings import ConfigError
    from signaling.testing.hub import test_settings

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        test_settings(recording=recording)


def test_s3_settings_from_the_environment_keep_the_secret_out_of_reprs() -> None:
    from signaling.settings import as_dict, load_settings

    settings = load_settings(None, env={
        "CONNVO_RTC_AUTH_SECRET": "x" * 40, "CONNVO_RTC_RECORDING_STORAGE": "s3",
        "CONNVO_RTC_RECORDING_S3_BUCKET": "recs", "CONNVO_RTC_RECORDING_S3_ACCESS_KEY": "AKID",
        "CONNVO_RTC_RECORDING_S3_SECRET_KEY": "top-secret-value",
        "CONNVO_RTC_RECORDING_S3_PATH_STYLE": "false", "CONNVO_RTC_RECORDING_S3_PART_MB": "16"})
    config = settings.s3_config()
    assert config is not None
    assert (config.bucket, config.access_key, config.secret_key) == ("recs", "AKID",
                                                                     "top-secret-value")
    assert not config.path_style and config.part_bytes == 16 << 20
    from signaling.s3 import S3Client

    assert S3Client(config).url("m/a b.ogg") == \
        "https://recs.s3.us-east-1.amazonaws.com/m/a%20b.ogg"
    assert "top-secret-value" not in repr(settings) + repr(config) + str(as_dict(settings))


async def test_a_file_s_note_is_kept_fresh_while_it_grows_and_not_after(
    s3: S3Server, tmp_path: Path,
) -> None:
    """The heartbeat is a directory's mtime: the note is put again while the spool file
    grows; a writer that stops writing (hung) lets it go stale, as a dead one would."""
    storage = S3Storage(bucket_config(s3), tmp_path / "spool", heartbeat_s=0.2)
    try:
        path = storage.begin("meeting_1", "p_1.1.aa.ogg")
        storage.note("meeting_1", "p_1.1.aa.ogg", meta())
        await wait_until(lambda: storage.notes_put >= 1, 10, what="the note put")
        for n in range(3):  # grows: put again each time
            with path.open("ab") as f:
                f.write(b"x" * 1000)
            os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 1 + n))
            await wait_until(lambda n=n: storage.notes_put >= 2 + n, 10,  # type: ignore[misc]
                             what="the note put again")
        put = storage.notes_put
        skipped = storage.heartbeats_skipped
        await wait_until(lambda: storage.heartbeats_skipped >= skipped + 3, 10,
                         what="three heartbeats of a file that did not grow")
        assert storage.notes_put == put
        assert [p.name for p in await storage.list_pending("meeting_1")] == ["p_1.1.aa.ogg"]
    finally:
        await storage.aclose()
