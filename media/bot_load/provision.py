"""Creating the meetings and join tokens a load test needs, through the hub's HTTP API.

Three ways to get credentials (:class:`~media.bot_load.config.LoadTestConfig`):

- ``secret``: the organizer's user token and the bots' join tokens are minted here with the
  hub's HS256 secret (one ``createMeeting`` + ``startMeeting`` per room; each bot is its own
  user, the first of each room the host).
- ``user_token``: a real organizer credential; each bot's join token comes from
  ``createJoinToken`` (the first as host, the others as participants -- all the same user,
  which the hub allows for connected seats).
- neither: ``POST /api/dev/login`` on a dev-mode hub for an organizer token, then as above.

The API answers 429 ``rate-limited`` (20 requests/s per caller by default) and 503
``unavailable`` with ``retryable: true``: those are retried with exponential backoff and
jitter; anything else fails the run with a :class:`ProvisionError` carrying the hub's code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from signaling.tokens import TokenService

from .config import LoadTestConfig

logger = logging.getLogger(__name__)

#: Rooms created by one organizer (under a hub's default quota of 50 open meetings per user).
ROOMS_PER_ORGANIZER = 40

API_PREFIX = "/api/run/meetings"


class ProvisionError(Exception):
    """The hub refused (or could not be asked) to create what the load test needs."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class RoomPlan:
    """One meeting created for the load test and one join token per bot."""

    meeting_id: str
    room_id: str
    tokens: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retryable API answers (429, 503, connection resets)."""

    attempts: int = 10
    """Tries per request, the first included."""
    base_s: float = 0.25
    """Delay after the first retryable failure; doubles each time."""
    max_s: float = 4.0
    """Longest single delay, seconds."""

    def delay(self, attempt: int) -> float:
        """Delay before try ``attempt + 1`` (``attempt`` counts from 1), with +-25 % jitter."""
        raw = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        return raw * random.uniform(0.75, 1.25)


class ApiClient:
    """Calls ``/api/run/meetings/...`` with ``{"args": ...}`` and unwraps the envelope."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, *,
                 retry: RetryPolicy | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._retry = retry or RetryPolicy()
        #: Retryable answers seen (429s mostly), for the report.
        self.retries = 0

    async def call(self, path: str, args: dict[str, Any], token: str | None) -> Any:
        """POST and return ``value``; raise :class:`ProvisionError` once retries run out or
        on a non-retryable answer."""
        url = path if path.startswith("/api/") else f"{API_PREFIX}/{path}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        last = ProvisionError("no-attempt", f"{url}: no request made")
        for attempt in range(1, self._retry.attempts + 1):
            try:
                async with self._session.post(self.base_url + url, json={"args": args},
                                              headers=headers) as resp:
                    status = resp.status
                    text = await resp.text()
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                last = ProvisionError("hub-unreachable", f"{self.base_url}: {exc}")
                if attempt >= 2:  # a refused connection will not start working in a second
                    raise last from None
            except aiohttp.ClientError as exc:
                raise ProvisionError("bad-response", f"{url}: {exc}") from None
            else:
                try:
                    body = json.loads(text)
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    # Not our envelope: a proxy's error page, a 404 from another server ...
                    raise ProvisionError(f"http-{status}", f"{url}: {text[:200]!r}",
                                         status=status)
                if status == 200 and body.get("status") == "success":
                    return body.get("value")
                data = body.get("errorData") or {}
                last = ProvisionError(str(data.get("code", f"http-{status}")),
                                      str(body.get("errorMessage", "")), status=status)
                if not (data.get("retryable") or status in (429, 503)):
                    raise last
            self.retries += 1
            await asyncio.sleep(self._retry.delay(attempt))
        raise last


async def provision_rooms(config: LoadTestConfig, *, run_id: str | None = None,
                          retry: RetryPolicy | None = None) -> tuple[list[RoomPlan], int]:
    """Create and start ``config.rooms`` meetings; return their plans and the number of
    retried API answers. Runs up to ``config.api_concurrency`` requests at once."""
    run_id = run_id or secrets.token_hex(3)
    minter = TokenService(secrets=(config.secret,)) if config.secret else None
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        api = ApiClient(config.api_base, session, retry=retry)
        organizers: dict[int, asyncio.Task[str]] = {}

        async def organizer_of(index: int) -> str:
            """One organizer per ROOMS_PER_ORGANIZER rooms: a hub caps each user's open
            meetings (limits.max_open_meetings_per_user, 50 by default). A given user token
            is one organizer for every room."""
            if config.user_token and minter is None:
                return config.user_token
            group = index // ROOMS_PER_ORGANIZER
            if group not in organizers:
                host_id = f"loadtest-{run_id}-{group}"
                organizers[group] = asyncio.ensure_future(
                    _organizer(api, minter, host_id))
            return await organizers[group]

        gate = asyncio.Semaphore(config.api_concurrency)
        # Tokens must outlive the run: joins happen up to ramp + settle after provisioning.
        ttl = int(config.window_end_s + 3600)

        async def one(index: int) -> RoomPlan:
            async with gate:
                organizer = await organizer_of(index)
                return await _provision_room(api, config, organizer, minter, run_id, index, ttl)

        started = time.monotonic()
        plans = await asyncio.gather(*(one(i) for i in range(config.rooms)))
        logger.info("provisioned %d rooms in %.1f s (%d retried API answers)", len(plans),
                    time.monotonic() - started, api.retries)
        return list(plans), api.retries


async def _organizer(api: ApiClient, minter: TokenService | None, host_id: str) -> str:
    if minter is not None:
        return minter.mint_user(host_id, f"{host_id}@loadtest.invalid", host_id)
    return await _dev_login(api, host_id)


async def _dev_login(api: ApiClient, host_id: str) -> str:
    try:
        value = await api.call("/api/dev/login", {"email": f"{host_id}@loadtest.invalid",
                                                  "name": host_id}, None)
    except ProvisionError as exc:
        if exc.status in (404, 405):
            raise ProvisionError(
                "no-credential", "give --token (a user JWT) or --secret (the hub's auth secret); "
                "this hub is not in dev mode") from None
        raise
    return str(value["token"])


async def _provision_room(api: ApiClient, config: LoadTestConfig, organizer: str,
                          minter: TokenService | None, run_id: str, index: int,
                          ttl: int) -> RoomPlan:
    created = await api.call("lifecycle/createMeeting", {
        "title": f"load test {run_id} room {index}", "participantEmails": [],
        "maxParticipants": config.peers_per_room}, organizer)
    meeting_id = str(created["meetingId"])
    started = await api.call("lifecycle/startMeeting", {"meetingId": meeting_id}, organizer)
    room_info = started.get("roomInfo") if isinstance(started, dict) else None
    if not room_info:
        raise ProvisionError("not-webrtc", f"meeting {meeting_id} did not get a WebRTC room")
    room_id = str(room_info["roomId"])
    tokens: list[str] = []
    for bot in range(config.peers_per_room):
        role = "host" if bot == 0 else "participant"
        if minter is not None:
            user = f"loadtest-{run_id}" if bot == 0 else f"loadtest-{run_id}-r{index}-b{bot}"
            token, _ = minter.mint_join(room_id, user, role, name=f"bot {index}.{bot}", ttl_s=ttl)
        else:
            value = await api.call("webrtc/index/createJoinToken", {
                "meetingId": meeting_id, "role": role, "ttlSeconds": ttl}, organizer)
            token = str(value["token"])
        tokens.append(token)
    return RoomPlan(meeting_id=meeting_id, room_id=room_id, tokens=tuple(tokens))
