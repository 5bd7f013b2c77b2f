"""A recorded meeting in Chromium, the demo page as a person gets it: the page sends its fake
camera to the server peer (the room records video), the server peer writes it as sent, and
after the meeting the track file holds the camera's frames and the composite plays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from media.tap.composite import scan
from media.tap.video_writer import VP8TrackWriter
from signaling.recording_storage import DirectoryStorage
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.media.tap.test_recording import ready, recorder_worker
from tests.support.browser import Chromium
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


@pytest.fixture
async def recording_hub(tmp_path: Path) -> AsyncIterator[HubHandle]:
    """A dev-mode hub (the demo page's login) keeping recordings in ``tmp_path``."""
    handle = await start_hub(test_settings(auth={"dev_login": True},
                                           recording={"dir": str(tmp_path / "rec")}))
    try:
        yield handle
    finally:
        await handle.aclose()


def decode(path: Path) -> tuple[list[tuple[int, int, bool, float]], list[str]]:
    """(width, height, key frame, time s) of every video frame, and the audio codecs."""
    with av.open(str(path)) as container:
        audio = [s.codec_context.name for s in container.streams.audio]
        frames = [(f.width, f.height, f.key_frame, float(f.pts * f.time_base))
                  for f in container.decode(container.streams.video[0])]
    return frames, audio


async def test_a_pages_camera_is_recorded_and_the_composite_plays(
        recording_hub: HubHandle, browser: Chromium) -> None:
    """Ada ticks "Record" and starts the meeting with her (fake) camera on; the server peer
    receives her video and writes it without decoding; she ends the meeting; getRecording is
    ready with the mix, the composite and her two track files: her video file decodes from
    a key frame at the camera's size, and the composite decodes at 640x360 for the meeting's
    length with the mixed audio."""
    hub = recording_hub
    storage = DirectoryStorage(hub.settings.recording.dir)
    async with recorder_worker(hub) as worker:
        ada = await browser.open(hub.base_url + "/", "Ada Lovelace")
        await ada.start_meeting("Recorded call", record=True)
        room_id = await ada.room_id()
        assert await ada.page.evaluate("() => window.demo.room.features.recordVideo") is True
        session = await wait_until(lambda: worker.sessions.get(room_id), timeout=30,
                                   what="the server peer in the room")
        recorder = session.recorder
        assert recorder is not None
        meeting_id = session.job.meeting_id

        def camera() -> VP8TrackWriter | None:
            return next((w for w in recorder.open_tracks.values()
                         if isinstance(w, VP8TrackWriter) and w.frames >= 60), None)

        writer = await wait_until(camera, timeout=40, interval=0.2,
                                  what="a few seconds of Ada's camera recorded")
        assert writer.size is not None
        print(f"\nrecording Ada's camera: {writer.size.width}x{writer.size.height}, "
              f"{writer.keyframe_requests} key frame request(s), {writer.dropped} dropped")
        await ada.page.evaluate("() => window.demo.room.end()")
        await wait_until(lambda: worker.completed >= 1, timeout=20, interval=0.1,
                         what="the server peer leaving the ended room")
    user_id = next(f.meta.user_id for f in storage.files(meeting_id))
    value = await wait_until(lambda: ready(hub, meeting_id, user_id), timeout=90,
                             interval=0.25, what="getRecording ready")
    kinds = [f["kind"] for f in value["files"]]
    assert kinds == ["mix", "composite", "track", "track"], kinds
    meeting_ms = value["files"][0]["durationMs"]
    [video] = [f for f in value["files"] if f["kind"] == "track"
               and f["mimeType"].startswith("video/webm")]
    video_path = storage.local_path(meeting_id, video["url"].split("/")[-1].split("?")[0])
    assert video_path is not None
    frames, _ = await asyncio.to_thread(decode, video_path)
    width, height, key, first_s = frames[0]
    print(f"Ada's video track: {len(frames)} frames, {width}x{height}, from {first_s:.2f} s "
          f"to {frames[-1][3]:.2f} s, {video['bytes']} bytes")
    assert key and width >= 160 and height >= 90
    assert scan(video_path).title == "Ada Lovelace"  # her name on the composite's placeholder
    assert len(frames) >= 60
    assert abs(first_s * 1000 - video["startMs"]) <= 2
    comp_path = storage.local_path(meeting_id, "composite.webm")
    assert comp_path is not None
    comp, audio = await asyncio.to_thread(decode, comp_path)
    length_s = comp[-1][3] + 1 / 15
    print(f"composite: {len(comp)} frames {comp[0][0]}x{comp[0][1]}, {length_s:.2f} s "
          f"(meeting {meeting_ms / 1000:.2f} s), audio {audio}")
    assert (comp[0][0], comp[0][1]) == (640, 360) and comp[0][2]
    assert audio == ["opus"]
    assert abs(length_s - meeting_ms / 1000) < 0.5
    # And it plays in the browser, from its signed link: a <video> loads it (the size and
    # length the file has) and its clock runs.
    comp_url = value["files"][1]["url"]
    played = await ada.page.evaluate("""async (url) => {
      const video = document.createElement('video');
      video.muted = true;
      document.body.append(video);
      const loaded = new Promise((ok, fail) => {
        video.onloadedmetadata = ok;
        video.onerror = () => fail(new Error('video error ' + video.error?.code));
      });
      video.src = url;
      await loaded;
      await video.play();
      const started = performance.now();
      while (video.currentTime < 1 && performance.now() - started < 10000) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const result = { width: video.videoWidth, height: video.videoHeight,
                       duration: video.duration, currentTime: video.currentTime };
      video.remove();
      return result;
    }""", comp_url)
    print(f"composite in Chromium: {played}")
    assert (played["width"], played["height"]) == (640, 360)
    assert played["currentTime"] >= 1
