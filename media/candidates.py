"""A remote peer's trickled ICE candidates: parsing, holding back, adding.

Browser candidates arrive trickled (``candidate`` frames, ``null`` = end of candidates). They are
parsed with aiortc's ``candidate_from_sdp`` after stripping ``candidate:``, and held back until
the remote description is set. aiortc puts all its own candidates into its SDP, so this client
never sends any; this module is the receiving side only.
"""

from __future__ import annotations

import logging
from collections import deque

from aiortc import RTCIceCandidate, RTCPeerConnection
from aiortc.exceptions import InvalidStateError
from aiortc.sdp import candidate_from_sdp

from signaling import protocol

from .errors import NegotiationError

logger = logging.getLogger(__name__)


def parse_candidate(candidate: protocol.IceCandidate) -> RTCIceCandidate | None:
    """A browser ``RTCIceCandidateInit`` as aiortc's candidate; ``None`` for the empty
    end-of-candidates marker. Raises :class:`NegotiationError` on garbage."""
    text = candidate.candidate.strip()
    text = text.removeprefix("a=")
    text = text.removeprefix("candidate:")
    if not text:
        return None
    bits = text.split()
    # aiortc asserts on short input; check first (never assert on what a peer sends).
    if len(bits) < 8 or not bits[1].isdigit() or not bits[3].isdigit() or not bits[5].isdigit():
        raise NegotiationError(f"malformed candidate {candidate.candidate[:120]!r}")
    try:
        parsed = candidate_from_sdp(text)
    except (ValueError, IndexError):  # e.g. "rport x"
        raise NegotiationError(f"malformed candidate {candidate.candidate[:120]!r}") from None
    parsed.sdpMid = candidate.sdp_mid
    parsed.sdpMLineIndex = candidate.sdp_m_line_index
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0  # bundled: the first line carries the transport
    return parsed


class RemoteCandidates:
    """The candidates one remote peer trickles to us. :meth:`receive` each ``candidate`` frame;
    :meth:`flush` once the remote description is set; :meth:`clear` when the connection is
    replaced (held candidates belong to the old one)."""

    def __init__(self, *, max_pending: int, log_prefix: str = "") -> None:
        # Bounded: a peer that trickles before its offer cannot make us hold without limit.
        self._pending: deque[RTCIceCandidate | None] = deque(maxlen=max_pending)
        self._log = log_prefix

    async def receive(self, pc: RTCPeerConnection, message: protocol.CandidateFrom) -> None:
        """Add the candidate to ``pc``, or hold it until ``pc`` has a remote description. A
        malformed candidate is logged and skipped, not fatal."""
        candidate = None
        if message.candidate is not None:
            try:
                candidate = parse_candidate(message.candidate)
            except NegotiationError as exc:
                logger.warning("%s skipping candidate: %s", self._log, exc.message)
                return
        if pc.remoteDescription is None:
            if len(self._pending) == self._pending.maxlen:
                logger.warning("%s too many early candidates; dropping the oldest", self._log)
            self._pending.append(candidate)
            return
        await self._add(pc, candidate)

    async def flush(self, pc: RTCPeerConnection) -> None:
        """Add every held candidate to ``pc`` (its remote description was just set)."""
        while self._pending:
            await self._add(pc, self._pending.popleft())

    def clear(self) -> None:
        """Forget the held candidates."""
        self._pending.clear()

    async def _add(self, pc: RTCPeerConnection, candidate: RTCIceCandidate | None) -> None:
        # One unusable candidate (an unresolvable mDNS name, a family we cannot bind) must not
        # end the connection: the others may well work, and the ICE watchdog still applies.
        try:
            await pc.addIceCandidate(candidate)
        except (OSError, ValueError, InvalidStateError) as exc:
            logger.warning("%s could not add candidate %s: %r", self._log,
                           candidate.ip if candidate else "end", exc)
