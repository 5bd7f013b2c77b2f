"""Everything that is an aiortc peer: the headless peer client and its parts.

The public surface: :class:`PeerClient` + :class:`PeerClientConfig` (:mod:`media.peer`), the
audio source specs (:mod:`media.sources`), the stats snapshots (:mod:`media.stats`), the error
tree (:mod:`media.errors`) and the loopback pin (:mod:`media.loopback`).
"""

from .errors import (
    ClientClosedError,
    ForbiddenError,
    HubProtocolError,
    HubUnreachableError,
    IceFailedError,
    JoinRejectedError,
    JoinTimeoutError,
    KickedError,
    MediaTimeoutError,
    NegotiationError,
    NotFoundError,
    PeerClientError,
    RateLimitedError,
    RoomEndedError,
    RoomFullError,
    SendQueueFullError,
    TakenOverError,
    TokenError,
    TurnAuthError,
)
from .events import Subscription
from .loopback import pin_host_addresses
from .peer import PeerClient, PeerClientConfig
from .sources import AudioSpec, FileSpec, OpusSpec, ToneSpec
from .stats import ClientSnapshot, RemotePeerSnapshot, RtpStreamSnapshot

__all__ = [
    "AudioSpec",
    "ClientClosedError",
    "ClientSnapshot",
    "FileSpec",
    "ForbiddenError",
    "HubProtocolError",
    "HubUnreachableError",
    "IceFailedError",
    "JoinRejectedError",
    "JoinTimeoutError",
    "KickedError",
    "MediaTimeoutError",
    "NegotiationError",
    "NotFoundError",
    "OpusSpec",
    "PeerClient",
    "PeerClientConfig",
    "PeerClientError",
    "RateLimitedError",
    "RemotePeerSnapshot",
    "RoomEndedError",
    "RoomFullError",
    "RtpStreamSnapshot",
    "SendQueueFullError",
    "Subscription",
    "TakenOverError",
    "TokenError",
    "ToneSpec",
    "TurnAuthError",
    "pin_host_addresses",
]
