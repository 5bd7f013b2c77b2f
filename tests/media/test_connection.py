"""Connection building blocks: who sends what, candidate parsing, ICE config, local media."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from media.connection import ConnectionOptions, parse_candidate, rtc_configuration
from media.errors import NegotiationError
from media.local import LocalMedia
from media.plan import plan_media
from media.receive import CountingQueue, skip_decoding
from media.sources import ToneSource, ToneSpec
from signaling import protocol


@pytest.mark.parametrize(
    ("local", "remote", "audio", "video"),
    [
        ("participant", "host", "sendrecv", "sendrecv"),
        ("participant", "tap", "sendonly", None),  # the tap gets audio only
        ("tap", "participant", "recvonly", None),  # and sends nothing
        ("participant", "observer", "sendonly", "sendonly"),
        ("observer", "host", "recvonly", "recvonly"),
        ("observer", "tap", "inactive", None),
    ],
)
def test_plan_media_by_roles(local: str, remote: str, audio: str, video: str | None) -> None:
    plan = plan_media(local, remote)
    assert (plan.audio, plan.video) == (audio, video)


def test_a_room_that_records_video_sends_the_tap_video_too() -> None:
    # features.recordVideo: participants send their camera to the server peer, which receives
    # it (and still sends nothing); an observer still sends the tap nothing.
    sender = plan_media("participant", "tap", tap_video=True)
    assert (sender.audio, sender.video) == ("sendonly", "sendonly")
    tap = plan_media("tap", "participant", send_audio=False, send_video=False, tap_video=True)
    assert (tap.audio, tap.video) == ("recvonly", "recvonly")
    observer = plan_media("observer", "tap", tap_video=True)
    assert (observer.audio, observer.video) == ("inactive", None)


def test_plan_media_without_local_media_only_receives() -> None:
    # An idle sender line still costs CPU in aiortc, so a kind we never send is recvonly.
    plan = plan_media("participant", "host", send_audio=False, send_video=False)
    assert (plan.audio, plan.video) == ("recvonly", "recvonly")


def test_browser_candidate_is_parsed_with_its_mid() -> None:
    cand = protocol.IceCandidate(
        candidate="candidate:842163049 1 udp 1677729535 127.0.0.1 53705 typ srflx "
                  "raddr 0.0.0.0 rport 0 generation 0 ufrag sXYZ network-cost 999",
        sdp_mid="0", sdp_m_line_index=0,
    )
    parsed = parse_candidate(cand)
    assert parsed is not None
    assert (parsed.ip, parsed.port, parsed.type, parsed.protocol) == (
        "127.0.0.1", 53705, "srflx", "udp")
    assert (parsed.sdpMid, parsed.sdpMLineIndex) == ("0", 0)


def test_candidate_without_mid_goes_to_the_first_line() -> None:
    parsed = parse_candidate(protocol.IceCandidate(
        candidate="candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"))
    assert parsed is not None and parsed.sdpMLineIndex == 0


def test_empty_candidate_is_the_end_marker() -> None:
    assert parse_candidate(protocol.IceCandidate(candidate="")) is None


@pytest.mark.parametrize("text", ["candidate:garbage", "candidate:1 1 udp x 1.2.3.4 5 typ host",
                                  "candidate:1 1 udp 1 1.2.3.4 port typ host",
                                  "candidate:1 1 udp 1 1.2.3.4 5 typ srflx raddr 0.0.0.0 rport x"])
def test_garbage_candidate_is_a_negotiation_error(text: str) -> None:
    with pytest.raises(NegotiationError):
        parse_candidate(protocol.IceCandidate(candidate=text))


def test_rtc_configuration_is_always_explicit() -> None:
    # None would make aiortc use a public STUN server.
    config = rtc_configuration(ConnectionOptions(ice_servers=()))
    assert config.iceServers == []
    relay = rtc_configuration(ConnectionOptions(
        ice_servers=(protocol.IceServer(urls="turn:127.0.0.1:3478", username="u",
                                        credential="c"),),
        ice_transport_policy="relay"))
    assert relay.iceTransportPolicy is RTCIceTransportPolicy.RELAY
    assert relay.iceServers is not None
    assert relay.iceServers[0].username == "u"


async def test_local_media_toggles_every_track() -> None:
    local = LocalMedia(ToneSource(ToneSpec()), video=False)
    first, second = local.audio_track(), local.audio_track()
    assert first is not None and second is not None and first is not second
    assert local.video_track() is None
    local.set_enabled(audio=False, video=True)  # video was never negotiated: stays off
    assert not first.enabled and not second.enabled  # type: ignore[attr-defined]
    assert not local.video_enabled
    local.set_enabled(audio=True)
    assert first.enabled  # type: ignore[attr-defined]


async def test_skip_decoding_swaps_an_unstarted_receiver_queue() -> None:
    pc = RTCPeerConnection(rtc_configuration(ConnectionOptions(ice_servers=())))
    try:
        receiver = pc.addTransceiver("audio").receiver
        seen: list[int] = []
        assert skip_decoding(receiver, seen.append)
        queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
        assert isinstance(queue, CountingQueue)

        class Frame:
            data = b"12345"

        queue.put((object(), Frame()))
        assert seen == [5] and queue.empty()
        queue.put(None)  # end of stream still reaches the decoder thread
        assert queue.get_nowait() is None
    finally:
        await pc.close()
