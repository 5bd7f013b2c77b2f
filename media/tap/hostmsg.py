"""Every message between a hub and the tap process it hosts (:mod:`media.tap.host`).

The hub (parent) and its tap process (child, :mod:`media.tap.hosted`) talk over a socket pair
in the framing of :mod:`media.tap.procmsg` (a 4-byte length, a msgpack body). The child's job
queue is the hub's: each :class:`~signaling.tapjobs.TapJobs` call the child's worker makes is a
request with a ``call`` number, answered by one :class:`Reply`.

Hub -> child (:data:`ToTap`): :class:`Setup` (first, once), :class:`Reply`.
Child -> hub (:data:`ToHub`): :class:`Claim`, :class:`Renew`, :class:`Complete`,
:class:`Enqueue`, :class:`Release` (requests), :class:`Warm` (the recognisers are ready).
"""

from __future__ import annotations

import msgspec

from media.errors import TapError
from signaling.tapjobs import TapJob


class TapLinkError(TapError, ConnectionError):
    """The link between the hub and its tap process is gone (the other side exited) or carried
    something that is not a message of this module (a bug on one side)."""

    code = "tap-link-error"
    retryable = True


class TapJobsCallError(TapError, RuntimeError):
    """A job-queue call the tap process made failed in the hub (Redis down, say): the worker
    retries as it would against its own queue."""

    code = "tap-jobs-call-failed"
    retryable = True


class _Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every message (few and small: named fields, no ``array_like``)."""


# --------------------------------------------------------------------------- hub -> tap


class Setup(_Message, tag="setup", frozen=True, kw_only=True):
    """The worker to run: its id in the job queue and its :class:`~media.tap.config.TapConfig`
    (JSON, so a field added there needs nothing here)."""

    worker_id: str
    config: bytes


class Reply(_Message, tag="reply", frozen=True, kw_only=True):
    """The answer to request ``call``: ``job`` (claim), ``ok`` (renew, enqueue), or ``error``
    (the call failed in the hub: the child raises it). ``hub_url`` is where to join rooms (the
    hub learns its port only once it listens)."""

    call: int
    job: TapJob | None = None
    ok: bool = False
    error: str = ""
    hub_url: str = ""


ToTap = Setup | Reply


# --------------------------------------------------------------------------- tap -> hub


class Claim(_Message, tag="claim", frozen=True, kw_only=True):
    call: int
    worker_id: str
    timeout_s: float


class Renew(_Message, tag="renew", frozen=True, kw_only=True):
    call: int
    worker_id: str
    job: TapJob


class Complete(_Message, tag="complete", frozen=True, kw_only=True):
    call: int
    job: TapJob


class Enqueue(_Message, tag="enqueue", frozen=True, kw_only=True):
    call: int
    job: TapJob


class Release(_Message, tag="release", frozen=True, kw_only=True):
    call: int
    worker_id: str
    job: TapJob


class Warm(_Message, tag="warm", frozen=True, kw_only=True):
    """The tap's recognisers are started and warm (sent once per tap process): their PIDs."""

    pid: int
    recognisers: list[int]


Request = Claim | Renew | Complete | Enqueue | Release
ToHub = Claim | Renew | Complete | Enqueue | Release | Warm


# --------------------------------------------------------------------------- codec

_tap_decoder = msgspec.msgpack.Decoder(ToTap)
_hub_decoder = msgspec.msgpack.Decoder(ToHub)


def decode_to_tap(body: bytes) -> ToTap:
    """Decode one body the hub sent or raise :class:`RecogniserProtocolError`."""
    try:
        return _tap_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise TapLinkError(f"bad message to the tap process: {exc}") from None


def decode_to_hub(body: bytes) -> ToHub:
    """Decode one body the tap process sent or raise :class:`RecogniserProtocolError`."""
    try:
        return _hub_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise TapLinkError(f"bad message from the tap process: {exc}") from None
