"""The message decoder: round trips, and a fuzz test that it never raises anything but
ProtocolError on arbitrary input."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling import protocol as p
from signaling.errors import ProtocolError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
TYPES = ["join", "offer", "answer", "candidate", "media", "chat", "kick", "end", "ping", "leave",
         "joined", "bogus", ""]
FIELDS = ["token", "resume", "roomId", "to", "sdp", "candidate", "audio", "video", "screen",
          "text", "peerId", "ts", "from"]
frames = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.text(max_size=8) | json_values},
    optional={f: json_values for f in FIELDS},
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_decoder_survives_arbitrary_bytes(data: bytes) -> None:
    try:
        message = p.decode_client(data)
    except ProtocolError as exc:
        assert exc.code in ("invalid-json", "invalid-message", "unknown-type")
        assert exc.message
    else:
        assert isinstance(message, p.ClientMessage.__args__)  # type: ignore[attr-defined]


@settings(max_examples=1500, deadline=None)
@given(frames)
def test_decoder_on_structured_frames(frame: dict) -> None:
    data = json.dumps(frame).encode()
    try:
        message = p.decode_client(data)
    except ProtocolError as exc:
        assert exc.code in ("invalid-message", "unknown-type")
        return
    # Whatever decodes re-encodes to a frame that decodes to the same message.
    assert p.decode_client(p.encode(message)) == message
    assert p.message_type(message) == frame["type"]


@pytest.mark.parametrize("message", [
    p.Join(token="t", resume="r", room_id="room_1"),
    p.Offer(to="p_1", sdp="v=0"),
    p.Candidate(to="p_1", candidate=p.IceCandidate(candidate="candidate:1", sdp_mid="0",
                                                   sdp_m_line_index=0)),
    p.Candidate(to="p_1", candidate=None),
    p.Media(audio=True),
    p.Chat(text="hi"),
    p.Kick(peer_id="p_2"),
    p.End(), p.Ping(ts=1.5), p.Leave(),
])
def test_client_round_trip(message: p.ClientMessage) -> None:
    assert p.decode_client(p.encode(message)) == message


def test_wire_names_are_camel_case() -> None:
    frame = json.loads(p.encode(p.CandidateFrom(from_="p_1", candidate=p.IceCandidate(
        candidate="c", sdp_m_line_index=1, username_fragment="u"))))
    assert frame == {"type": "candidate", "from": "p_1",
                     "candidate": {"candidate": "c", "sdpMLineIndex": 1, "usernameFragment": "u"}}
    joined = json.loads(p.encode(p.PeerJoined(peer=p.PeerInfo(peer_id="p", user_id="u",
                                                              role="host"))))
    assert joined["peer"] == {"peerId": "p", "userId": "u", "role": "host", "name": "",
                              "media": {"audio": False, "video": False, "screen": False},
                              "joinedAt": 0}


def test_server_decoder_reads_every_server_message() -> None:
    for message in [p.Pong(), p.Error(code="x", message="y"), p.RoomEndedMsg(),
                    p.Transcript(peer_id="p", segment_id="s", text="t", final=True, start_ms=0,
                                 end_ms=5)]:
        assert p.decode_server(p.encode(message)) == message
    with pytest.raises(ProtocolError):
        p.decode_server(b'{"type": "offer", "to": "x"}' + b"}")
    assert isinstance(msgspec.json.decode(p.encode(p.End())), dict)
