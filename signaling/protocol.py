"""Websocket protocol v1: every message, declared once.

Frames are JSON text, one object each, tagged by ``type``. Client frames are decoded with
:func:`decode_client` (the hub) and server frames with :func:`decode_server` (peer clients, bots,
the tap, tests). Both raise :class:`~signaling.errors.ProtocolError` on anything that is not a
valid message; nothing here ever asserts on input.

Field names on the wire are camelCase (``peerId``); Python attributes are snake_case. A relayed
message names its sender in ``from`` (attribute ``from_``), stamped by the hub.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .codes import ErrorCode
from .errors import ProtocolError

#: The WebRTC mesh never holds more than this many non-tap peers (a room's ``capacity`` and a
#: meeting's ``maxParticipants`` on our tier are at most this).
MESH_LIMIT = 4

Role = Literal["host", "participant", "observer", "tap", "agent"]
#: Roles a join token may carry for a person (``tap`` and ``agent`` are minted by the hub for
#: its server peers, never through the API).
PERSON_ROLES: tuple[str, ...] = ("host", "participant", "observer")
#: The hub's own server peer in a room: ``tap`` (hidden, no seat) or ``agent`` (the AI persona
#: of a meeting created from a scenario: visible, a seat, sends audio). A room has at most one.
SERVER_ROLES: tuple[str, ...] = ("tap", "agent")

PeerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Sdp = Annotated[str, msgspec.Meta(min_length=1, max_length=131_072)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=8_192)]
ChatText = Annotated[str, msgspec.Meta(min_length=1, max_length=4_000)]


class _Msg(msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True, frozen=True):
    """Base of every frame."""


# --------------------------------------------------------------------------- shared value types


class MediaState(msgspec.Struct, rename="camel", frozen=True):
    """What a peer is sending: each flag true while that kind of track is live and unmuted."""

    audio: bool = False
    video: bool = False
    screen: bool = False


class IceCandidate(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """An ``RTCIceCandidateInit`` as browsers produce it."""

    candidate: Annotated[str, msgspec.Meta(max_length=2_048)]
    sdp_mid: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    sdp_m_line_index: Annotated[int, msgspec.Meta(ge=0, le=1024)] | None = None
    username_fragment: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class IceServer(msgspec.Struct, omit_defaults=True, frozen=True):
    """One entry of an ``RTCConfiguration.iceServers`` list, in the browser's shape."""

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


class AgentSpec(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """The AI persona of a meeting created from a scenario: who joins the room as the
    ``agent`` participant, with which voice (the seed's ``voiceId``, ``voiceProvider``,
    ``language``, ``welcomeMessage``; empty strings take the scenario's own)."""

    scenario_id: str
    #: The persona's display name (the scenario's ``persona.name``).
    name: str
    voice_id: str = ""
    voice_provider: Literal["elevenlabs", "azure", "cartesia"] = "azure"
    language: str = "English"
    welcome_message: str = ""


class Features(msgspec.Struct, rename="camel", frozen=True):
    """What the room allows; copied from the meeting's controls when its room is made.

    The defaults are what a meeting created without controls has (every one of them optional on
    ``createMeeting``): participants may send audio, video and their screen, there is no
    waiting room and no time limit. The host is exempt from the participant audio, video and
    screen controls."""

    chat: bool = True
    screen_sharing: bool = True
    transcription: bool = False
    recording: bool = False
    #: The recording includes participants' video: they send their camera (and screen) to
    #: the server peer too (``recording`` on, participant video allowed, ``recording.video``).
    record_video: bool = False
    max_participants: int = MESH_LIMIT
    participant_video: bool = True
    participant_audio: bool = True
    waiting_room: bool = False
    auto_admit: bool = False
    #: Minutes the meeting may last from its start (``None``: no limit).
    max_duration_minutes: int | None = None
    #: The meeting's AI persona (meetings created from a scenario), else ``None``.
    agent: AgentSpec | None = None

    @property
    def knocks(self) -> bool:
        """Whether people other than hosts wait in the waiting room until a host admits them."""
        return self.waiting_room and not self.auto_admit


class PeerInfo(msgspec.Struct, rename="camel", frozen=True):
    """What other peers learn about a peer (never its tokens)."""

    peer_id: str
    user_id: str
    role: Role
    name: str = ""
    media: MediaState = MediaState()
    joined_at: int = 0  # unix ms


# --------------------------------------------------------------------------- client -> server


class Join(_Msg, tag="join", frozen=True):
    """First frame of every connection. ``resume`` carries the ``resumeToken`` of a dropped
    connection; ``room_id``, when given, must match the token's room."""

    token: Token
    resume: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    room_id: PeerId | None = None


class Offer(_Msg, tag="offer", frozen=True):
    to: PeerId
    sdp: Sdp


class Answer(_Msg, tag="answer", frozen=True):
    to: PeerId
    sdp: Sdp


class Candidate(_Msg, tag="candidate", frozen=True):
    """A trickled ICE candidate; ``candidate: null`` marks the end of candidates."""

    to: PeerId
    candidate: IceCandidate | None = None


class Media(_Msg, tag="media", frozen=True):
    audio: bool = False
    video: bool = False
    screen: bool = False


class Chat(_Msg, tag="chat", frozen=True):
    text: ChatText


class Kick(_Msg, tag="kick", frozen=True):
    peer_id: PeerId


class End(_Msg, tag="end", frozen=True):
    pass


class AskMute(_Msg, tag="ask-mute", frozen=True):
    """Host only: ask one participant to mute their microphone. The hub relays it as
    ``mute-requested {from}``; the client mutes itself and says who asked (a request, never a
    remote switch: the person can unmute)."""

    peer_id: PeerId


class Ping(_Msg, tag="ping", frozen=True):
    ts: float | None = None


class Leave(_Msg, tag="leave", frozen=True):
    """Leave the room. ``closing``: the page is being closed *or reloaded* (a browser cannot
    tell which when it goes): the seat is kept for ``rooms.closing_grace_s`` only, so a reload
    resumes it and a closed tab frees it within seconds, not after the full resume grace."""

    closing: bool = False


class Admit(_Msg, tag="admit", frozen=True):
    """Host only: let a knocking peer (``knock``) into the room."""

    peer_id: PeerId


class Deny(_Msg, tag="deny", frozen=True):
    """Host only: turn a knocking peer away (it is closed with 4403 ``denied``)."""

    peer_id: PeerId


class TranscriptIn(_Msg, tag="transcript", frozen=True):
    """From the server peer only (tap or agent): text recognised in ``peer_id``'s audio, or
    the agent's own line (``peer_id`` its own). ``final`` segments replace the partials of the
    same ``segment_id``; times are ms since the meeting started. ``interrupted``: an agent's
    line cut off by a person (barge-in); ``text`` is what was said of it."""

    peer_id: PeerId
    segment_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    text: Annotated[str, msgspec.Meta(max_length=4_000)]
    final: bool
    start_ms: Annotated[int, msgspec.Meta(ge=0)]
    end_ms: Annotated[int, msgspec.Meta(ge=0)]
    interrupted: bool = False


#: How transcription keeps up in a room: ``live`` (every segment decoded, partials on),
#: ``delayed`` (the recogniser is behind: partials paused, finals late, nothing lost yet),
#: ``dropping`` (speech was not transcribed: segments dropped or cut short).
TranscriptState = Literal["live", "delayed", "dropping"]


class TranscriptStatusIn(_Msg, tag="transcript-status", frozen=True):
    """From the tap only: how transcription keeps up in this room, sent when it changes (and
    to a newcomer while it is not ``live``). With ``dropping``: ``dropped`` segments of
    ``peer_id``'s speech (the speaker) were not transcribed. ``behind_ms``: how far the
    recogniser is behind."""

    state: TranscriptState
    peer_id: PeerId | None = None
    dropped: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    behind_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] = 0


#: Whether the room's server peer is recording participants' audio now.
RecordingState = Literal["recording", "stopped"]


class RecordingIn(_Msg, tag="recording", frozen=True):
    """From the tap (the room's server peer) only, in a room whose meeting records: it
    started (``recording``) or stopped (``stopped``) recording the room."""

    state: RecordingState


ClientMessage = (
    Join | Offer | Answer | Candidate | Media | Chat | Kick | End | AskMute | Ping | Leave
    | Admit | Deny
    | TranscriptIn | TranscriptStatusIn | RecordingIn
)
#: Client messages the hub relays to one other peer of the room.
RELAYED = (Offer, Answer, Candidate)


# --------------------------------------------------------------------------- server -> client


class Joined(_Msg, tag="joined", frozen=True):
    peer_id: str
    room_id: str
    role: Role
    peers: list[PeerInfo]
    ice_servers: list[IceServer]
    features: Features
    resume_token: str
    resumed: bool = False
    #: When the meeting's time runs out (unix ms), if it has a ``maxDurationMinutes``.
    ends_at: int | None = None


class Waiting(_Msg, tag="waiting", frozen=True):
    """Instead of ``joined``: the room has a waiting room and a host must admit this peer
    first. It holds no seat meanwhile; ``joined`` follows on admission."""


class Knock(_Msg, tag="knock", frozen=True):
    """To every host: ``peer`` is waiting to be admitted (``admit`` / ``deny``)."""

    peer: PeerInfo


class KnockEnded(_Msg, tag="knock-ended", frozen=True):
    """To every host: a knock is over (``admitted``, ``denied``, ``left``, ``timeout``,
    ``room-full``), whoever resolved it."""

    peer_id: str
    reason: str = ""


class RoomEnding(_Msg, tag="room-ending", frozen=True):
    """The meeting reaches its ``maxDurationMinutes`` at ``ends_at`` (unix ms): sent
    ``rooms.ending_warning_s`` before (or on joining after that), then ``room-ended``."""

    ends_at: int


class OfferFrom(_Msg, tag="offer", frozen=True):
    from_: str = msgspec.field(name="from")
    sdp: str = ""


class AnswerFrom(_Msg, tag="answer", frozen=True):
    from_: str = msgspec.field(name="from")
    sdp: str = ""


class CandidateFrom(_Msg, tag="candidate", frozen=True):
    from_: str = msgspec.field(name="from")
    candidate: IceCandidate | None = None


class PeerJoined(_Msg, tag="peer-joined", frozen=True):
    peer: PeerInfo


class PeerUpdated(_Msg, tag="peer-updated", frozen=True):
    peer: PeerInfo


class PeerLeft(_Msg, tag="peer-left", frozen=True):
    peer_id: str
    reason: str = "left"


class ChatFrom(_Msg, tag="chat", frozen=True):
    from_: str = msgspec.field(name="from")
    text: str = ""
    ts: int = 0  # unix ms
    name: str = ""


class Kicked(_Msg, tag="kicked", frozen=True):
    reason: str = "kicked by host"


class RoomEndedMsg(_Msg, tag="room-ended", frozen=True):
    reason: str = "ended"


class MuteRequested(_Msg, tag="mute-requested", frozen=True):
    """The host (``from``, named ``name``) asks this peer to mute its microphone."""

    from_: str = msgspec.field(name="from")
    name: str = ""


class Pong(_Msg, tag="pong", frozen=True):
    ts: float | None = None


class Transcript(_Msg, tag="transcript", frozen=True):
    peer_id: str
    segment_id: str
    text: str
    final: bool
    start_ms: int
    end_ms: int
    user_id: str = ""
    #: The agent's line was cut off by a person (barge-in); sent only when true.
    interrupted: bool = False


class TranscriptStatus(_Msg, tag="transcript-status", frozen=True):
    """The tap's :class:`TranscriptStatusIn`, with the speaker's ``user_id`` added."""

    state: TranscriptState
    peer_id: str | None = None
    user_id: str = ""
    dropped: int = 0
    behind_ms: int = 0


class Recording(_Msg, tag="recording", frozen=True):
    """To everyone in the room: they are being recorded (``recording``) or no longer
    (``stopped``). Relayed from the server peer; UIs show a REC badge while ``recording``."""

    state: RecordingState


class Error(_Msg, tag="error", frozen=True):
    code: str
    message: str
    retryable: bool = False


ServerMessage = (
    Joined | OfferFrom | AnswerFrom | CandidateFrom | PeerJoined | PeerUpdated | PeerLeft
    | ChatFrom | Kicked | RoomEndedMsg | MuteRequested | Pong | Transcript | TranscriptStatus
    | Recording | Error | Waiting | Knock | KnockEnded | RoomEnding
)

# --------------------------------------------------------------------------- codec

_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(ClientMessage)
_server_decoder = msgspec.json.Decoder(ServerMessage)


def encode(message: _Msg) -> bytes:
    """Serialise one message to its JSON frame."""
    return _encoder.encode(message)


def encode_text(message: _Msg) -> str:
    """Serialise one message to a ``str`` for ``send_str``."""
    return _encoder.encode(message).decode()


def _decode(decoder: msgspec.json.Decoder, data: str | bytes) -> object:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass: check it first
        text = str(exc)
        if isinstance(exc, msgspec.ValidationError):
            if "$.type" in text and ("Invalid value" in text or "Expected `str`" in text):
                raise ProtocolError(f"unknown message type ({text})", code=ErrorCode.UNKNOWN_TYPE) from None
            raise ProtocolError(text, code=ErrorCode.INVALID_MESSAGE) from None
        raise ProtocolError(f"not JSON: {text}", code=ErrorCode.INVALID_JSON) from None
    except RecursionError:  # msgspec's nesting limit: ~1,000 levels deep
        raise ProtocolError("JSON nested too deeply", code=ErrorCode.INVALID_JSON) from None


def decode_client(data: str | bytes) -> ClientMessage:
    """Decode one client frame or raise :class:`ProtocolError` (codes ``invalid-json``,
    ``unknown-type``, ``invalid-message``)."""
    return _decode(_client_decoder, data)  # type: ignore[return-value]


def decode_server(data: str | bytes) -> ServerMessage:
    """Decode one server frame or raise :class:`ProtocolError`."""
    return _decode(_server_decoder, data)  # type: ignore[return-value]


def message_type(message: _Msg) -> str:
    """The ``type`` tag of a message (for metrics and logs)."""
    return type(message).__struct_config__.tag  # type: ignore[return-value]
