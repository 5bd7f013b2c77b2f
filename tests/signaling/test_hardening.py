"""Regression tests for what an outside attack on the hub found (issue 13). Each docstring tells
the story; each runs against the real hub, with in-memory state and with Redis where the store
is involved."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from signaling import protocol as p
from signaling.codes import Close
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.wsclient import WsClient


@pytest.fixture(params=["memory", "redis"])
async def state_hub(request: pytest.FixtureRequest) -> AsyncIterator[HubHandle]:
    """A hub with in-memory state, and one with Redis state (a real redis-server)."""
    sections = {}
    if request.param == "redis":
        server = request.getfixturevalue("redis")
        sections["redis"] = {"url": server.url}
    handle = await start_hub(test_settings(**sections))
    try:
        yield handle
    finally:
        await handle.aclose()


async def test_an_expired_join_token_is_refused_even_with_a_resume(state_hub: HubHandle) -> None:
    """`join {token: <expired>, resume: "x"}` was admitted, with tokens expired for days: the
    expiry check was skipped when `resume` was present, and a failed resume then joined
    afresh. A resume never bypasses token validation: an invalid token is 4401."""
    hub = state_hub
    _, room_id = await hub.create_room(invite=("bob",))
    expired = hub.tokens.mint_join(room_id, "bob", "participant", ttl_s=60,
                                   now=time.time() - 3 * 86_400)[0]
    for resume in ("x", "p_nobody.secret", None):
        client = await WsClient.connect(hub.ws_url)
        try:
            frame = {"type": "join", "token": expired}
            if resume is not None:
                frame["resume"] = resume
            await client.send(frame)
            assert await client.expect_close() == Close.UNAUTHENTICATED
            assert not client.seen(p.Joined)
        finally:
            await client.aclose()


#: An offer as Chromium writes it, with the direction lines taken out or replaced per case.
_OFFER = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{session}"
          "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n{audio}"
          "a=rtpmap:111 opus/48000/2\r\n"
          "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n{video}"
          "a=rtpmap:96 VP8/90000\r\n")


def offer(session: str = "", audio: str = "a=recvonly\r\n", video: str = "a=recvonly\r\n") -> str:
    return _OFFER.format(session=session, audio=audio, video=video)


@pytest.mark.parametrize("sdp", [
    offer(audio=""),  # no direction attribute: the default is sendrecv
    offer(video="a=SENDRECV\r\n"),  # another case: Chromium accepts it
    offer(video="a=SendOnly\r\n"),
    offer(session="a=sendrecv\r\n", audio="", video=""),  # the session-level direction
    offer(session="a=recvonly\r\n", audio="a=sendonly\r\n"),  # the m-line's wins
], ids=["no-direction", "upper-case", "mixed-case", "session-level", "m-line-overrides"])
async def test_an_observer_offer_that_sends_is_refused_however_it_is_spelled(
        hub: HubHandle, sdp: str) -> None:
    """An observer's offer with no direction attribute (the default is sendrecv), or with
    `a=SENDRECV` in another case, was relayed, and Chromium accepted the media: the check looked
    for the strings "a=sendrecv"/"a=sendonly". Every m-line's effective direction is checked
    now (session-level default, case-insensitive)."""
    _, room_id = await hub.create_room(invite=("olga",))
    host = await WsClient.connect(hub.ws_url)
    olga = await WsClient.connect(hub.ws_url)
    try:
        jh = await host.join(hub.mint_token(room_id, "host", "host"))
        await olga.join(hub.mint_token(room_id, "olga", "observer"))
        await olga.send({"type": "offer", "to": jh.peer_id, "sdp": sdp})
        assert (await olga.expect(p.Error)).code == "forbidden"
        # What a receive-only observer really sends still goes through.
        await olga.send({"type": "offer", "to": jh.peer_id, "sdp": offer()})
        await host.expect(p.OfferFrom)
        assert len(host.seen(p.OfferFrom)) == 1, "the sending offer must not have been relayed"
    finally:
        await host.aclose()
        await olga.aclose()


async def test_one_user_holds_one_seat_a_newer_join_takes_it_over(state_hub: HubHandle) -> None:
    """The same participant token joined four times and the host then got `room-full`: one
    user filled the room. A user holds at most one seat per room; a newer join of the same user
    takes the seat over and the older socket is closed with 4411 (taken over). A reloaded page
    also gets its seat back at once instead of after the resume grace."""
    hub = state_hub
    _, room_id = await hub.create_room(invite=("bob",))
    token = hub.mint_token(room_id, "bob")
    sockets: list[WsClient] = []
    host = await WsClient.connect(hub.ws_url)
    try:
        for _ in range(4):
            sock = await WsClient.connect(hub.ws_url)
            sockets.append(sock)
            await sock.join(token)
        for older in sockets[:-1]:
            assert await older.expect_close() == Close.TAKEN_OVER
            assert [e.code for e in older.seen(p.Error)] == ["taken-over"]
        joined = await host.join(hub.mint_token(room_id, "host", "host"))
        assert [peer.user_id for peer in joined.peers] == ["bob"]
        await host.send({"type": "offer", "to": joined.peers[0].peer_id, "sdp": offer()})
        assert (await sockets[-1].expect(p.OfferFrom)).from_ == joined.peer_id
    finally:
        for sock in [host, *sockets]:
            await sock.aclose()


DEEP = "[" * 5_000 + "]" * 5_000


async def test_json_nested_too_deeply_is_a_clear_error_everywhere(hub: HubHandle) -> None:
    """JSON nested ~1,000 deep gave HTTP 500 (RecursionError); as a first websocket frame it
    closed 1011 with a traceback; on a joined socket the transport died with no close frame.
    Now: 400 `invalid-json`, close 4400, and an `error` frame with the socket kept."""
    _, room_id = await hub.create_room()
    session = await hub.session()
    async with session.post(f"{hub.api_url}/queries/getMeeting",
                            data=f'{{"args": {{"meetingId": {DEEP}}}}}',
                            headers={"Authorization": f"Bearer {hub.user_token('host')}",
                                     "Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["errorData"]["code"] == "invalid-json"
    first = await WsClient.connect(hub.ws_url)
    try:
        await first.send(f'{{"type": "join", "token": {DEEP}}}')
        assert await first.expect_close() == Close.BAD_JOIN
    finally:
        await first.aclose()
    joined = await WsClient.connect(hub.ws_url)
    try:
        await joined.join(hub.mint_token(room_id, "host", "host"))
        await joined.send(f'{{"type": "chat", "text": "hi", "extra": {DEEP}}}')
        assert (await joined.expect(p.Error)).code == "invalid-json"
        await joined.send({"type": "ping", "ts": 1})
        assert (await joined.expect(p.Pong)).ts == 1
    finally:
        await joined.aclose()


def _user_token(sub: str, **claims: object) -> str:
    """An HS256 user token signed with the hub's secret, with exactly ``claims``."""
    import jwt

    from signaling.testing.hub import SECRET

    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600, **claims}, SECRET,
                      algorithm="HS256")


async def _get_meeting(hub: HubHandle, meeting_id: str, token: str) -> tuple[int, dict]:
    session = await hub.session()
    async with session.post(f"{hub.api_url}/queries/getMeeting",
                            json={"args": {"meetingId": meeting_id}},
                            headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def test_an_unverified_or_look_alike_email_is_not_the_invitee(hub: HubHandle) -> None:
    """A user token whose `email` was the invitee's but whose `email_verified` was false was
    admitted as that participant, and so was `\\u212aate@example.com` (Kelvin sign): Python's
    `str.lower()` folds it onto `kate@example.com`. Now an email counts only when the token
    vouches for it (an explicit false never does), only ASCII letters are lower-cased, and a
    non-ASCII address never matches an ASCII invitation."""
    meeting_id, _ = await hub.create_room(invite=("kate",))
    for claims in ({"email": "kate@example.com", "email_verified": False},
                   {"email": "kate@example.com", "email_verified": "false"},
                   {"email": "\u212aate@example.com"},
                   {"email": "\u212aATE@EXAMPLE.COM", "email_verified": True},
                   {"email": "kate@example.com\u3000"}):
        status, body = await _get_meeting(hub, meeting_id, _user_token("mallory", **claims))
        assert (status, body["errorData"]["code"]) == (403, "not-invited"), claims
    # The real invitee, however her backend writes the ASCII case, is still a participant.
    for claims in ({"email": "Kate@Example.COM"},
                   {"email": "kate@example.com", "email_verified": True}):
        status, body = await _get_meeting(hub, meeting_id, _user_token("kate", **claims))
        assert (status, body["value"]["userRole"]) == (200, "participant"), (claims, body)
    # An invitation written with the look-alike invites that address only, not kate.
    status, body = await hub.call("lifecycle/createMeeting", {
        "title": "look-alike", "participantEmails": ["\u212aATE@Example.com"]})
    assert status == 200, body
    other = body["value"]["meetingId"]
    status, _ = await _get_meeting(hub, other, _user_token("kate", email="kate@example.com"))
    assert status == 403
    status, body = await _get_meeting(hub, other, _user_token("k", email="\u212aate@example.com"))
    assert (status, body["value"]["userRole"]) == (200, "participant")


async def test_dev_login_does_not_fold_a_look_alike_onto_another_user() -> None:
    """Dev login derived the user id from `email.strip().lower()`: `\\u212aate@example.com`
    logged in as `kate@example.com`'s user, host of her meetings. Only ASCII letters are
    lower-cased now, so the look-alike is a different user."""
    hub = await start_hub(test_settings(auth={"dev_login": True}))
    try:
        session = await hub.session()

        async def login(email: str) -> dict:
            async with session.post(hub.base_url + "/api/dev/login",
                                    json={"args": {"email": email}}) as resp:
                assert resp.status == 200
                return (await resp.json())["value"]  # type: ignore[no-any-return]

        kate, upper, kelvin = [await login(e) for e in (
            "kate@example.com", "KATE@Example.com", "\u212aate@example.com")]
        assert kate["userId"] == upper["userId"] and upper["email"] == "kate@example.com"
        assert kelvin["userId"] != kate["userId"] and kelvin["email"] == "\u212aate@example.com"
    finally:
        await hub.aclose()


async def test_ended_meetings_are_freed_from_the_memory_store_after_the_retention() -> None:
    """5,000 meetings took the hub's RSS from 94 to 176 MiB and ending them freed nothing: the
    in-memory store never forgot a meeting. It now expires them as Redis does, `key_ttl_s`
    after their last write: ended meetings, their rooms, presence and transcripts are freed,
    and a meeting that never started goes too. (The store's clock is the test's, so the
    retention passes exactly when the test says.)"""
    from signaling.memory_store import MemoryStore
    from tests.waiting import wait_until

    now = [1000.0]
    store = MemoryStore(key_ttl_s=60, clock=lambda: now[0])
    hub = await start_hub(test_settings(), store=store)
    try:
        meetings = []
        for i in range(12):
            meeting_id, room_id = await hub.create_room(invite=("bob",))
            meetings.append(meeting_id)
            if i == 0:  # one with a real call in it
                client = await WsClient.connect(hub.ws_url)
                try:
                    await client.join(hub.mint_token(room_id, "bob"))
                finally:
                    await client.aclose()
        status, body = await hub.call("lifecycle/createMeeting", {"title": "never started"})
        assert status == 200, body
        for meeting_id in meetings:
            status, body = await hub.call("lifecycle/endMeeting", {"meetingId": meeting_id})
            assert (status, body["value"]["state"]) == (200, "concluded")
        now[0] += 59  # within the retention a concluded meeting is still there to read
        status, body = await hub.call("queries/getMeeting", {"meetingId": meetings[0]})
        assert (status, body["value"]["state"]) == (200, "concluded")
        assert store.sizes()["meetings"] == 13 and store.sizes()["rooms"] == 12

        now[0] += 61
        await wait_until(lambda: set(store.sizes().values()) == {0},
                         what="every meeting freed from the memory store")
        status, body = await hub.call("queries/getMeeting", {"meetingId": meetings[0]})
        assert (status, body["errorData"]["code"]) == (404, "meeting-not-found")
    finally:
        await hub.aclose()


@pytest.mark.parametrize("state", ["memory", "redis"])
async def test_a_user_cannot_hold_more_open_meetings_than_the_quota(
        request: pytest.FixtureRequest, state: str) -> None:
    """One user at the API rate limit could create ~72,000 meetings an hour and keep them all.
    `limits.max_open_meetings_per_user` caps the open (scheduled or active) ones: the next
    `createMeeting` is HTTP 409 `meeting-quota` until one ends; other users are not affected.
    Both stores enforce it."""
    sections: dict[str, dict[str, object]] = {"limits": {"max_open_meetings_per_user": 3}}
    if state == "redis":
        sections["redis"] = {"url": request.getfixturevalue("redis").url}
    hub = await start_hub(test_settings(**sections))
    try:
        created = []
        for i in range(3):
            status, body = await hub.call("lifecycle/createMeeting", {"title": f"m{i}"})
            assert status == 200, body
            created.append(body["value"]["meetingId"])
        await hub.call("lifecycle/startMeeting", {"meetingId": created[0]})
        status, body = await hub.call("lifecycle/createMeeting", {"title": "one too many"})
        assert (status, body["errorData"]["code"]) == (409, "meeting-quota"), body
        assert body["errorData"]["retryable"] is False
        status, _ = await hub.call("lifecycle/createMeeting", {"title": "bob's"}, user="bob")
        assert status == 200
        status, _ = await hub.call("lifecycle/endMeeting", {"meetingId": created[0]})
        assert status == 200
        status, body = await hub.call("lifecycle/createMeeting", {"title": "after ending one"})
        assert status == 200, body
    finally:
        await hub.aclose()


# ---------------------------------------------------------------------------- frame floods
# Raw frames (zero-length continuations, pings, pongs) need the byte-level client.
from tests.signaling.test_rfc6455 import (  # the helpers of this section
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWs,
    client_frame,
    port_of,
)

#: Small frame limits, so that each flood hits its bound within a few frames.
FLOOD_LIMITS = {"max_fragments": 8, "message_burst": 10, "messages_per_second": 1.0,
                "abuse_strikes": 3}


@pytest.fixture
async def flood_hub() -> AsyncIterator[HubHandle]:
    """A hub with :data:`FLOOD_LIMITS`: 8 frames a message, 10 frames at once then 1/s, 3
    strikes."""
    handle = await start_hub(test_settings(limits=FLOOD_LIMITS))
    try:
        yield handle
    finally:
        for ws in RawWs.opened:
            ws.close()
        RawWs.opened.clear()
        await handle.aclose()


async def _flood_socket(hub: HubHandle, when: str) -> RawWs:
    """A raw websocket, joined to a room of its own when ``when`` is "joined"."""
    ws = await RawWs.connect(port_of(hub))
    if when == "joined":
        _, room_id = await hub.create_room(invite=("ada",))
        ws.send_json({"type": "join", "token": hub.mint_token(room_id, "ada")})
        while not isinstance(await ws.message(), p.Joined):
            pass
    return ws


async def _frames_up_to_close(ws: RawWs) -> tuple[list[tuple[int, bytes]], int]:
    """The frames the hub sent before its close frame, and the close code."""
    frames = []
    while (frame := await ws.frame())[0] != OP_CLOSE:
        assert frame[0] != -1, f"EOF without a close frame after {frames}"
        frames.append(frame)
    return frames, int.from_bytes(frame[1][:2], "big")


@pytest.mark.parametrize("when", ["before-join", "joined"])
async def test_endless_empty_continuations_are_cut_after_max_fragments(
        flood_hub: HubHandle, when: str) -> None:
    """6.5 M zero-length continuation frames on one joined socket raised the hub's RSS by
    ~50 MiB and the socket stayed open; before join, three sockets raised it by ~186 MiB
    within the join timeout, without any token. A fragment costs the client 6 bytes and cost
    the hub a list slot, and nothing bounded the fragments of a message. A message now comes
    in at most limits.max_fragments frames; one more closes the socket with 1009 (RFC 6455
    7.4.1: a message too big to process) and nothing more of it is read."""
    ws = await _flood_socket(flood_hub, when)
    ws.send(client_frame(OP_TEXT, b"", fin=False)
            + b"".join(client_frame(OP_CONT, b"", fin=False) for _ in range(10_000)))
    frames, code = await _frames_up_to_close(ws)
    assert (frames, code) == ([], Close.FRAME_TOO_LARGE)
    assert await ws.eof(), "the hub shut its side without waiting for our close"


@pytest.mark.parametrize("when", ["before-join", "joined"])
@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG], ids=["pings", "pongs"])
async def test_a_flood_of_pings_or_pongs_is_cut_before_and_after_join(
        flood_hub: HubHandle, when: str, opcode: int) -> None:
    """Only whole messages of a joined socket were counted against the rate limit: pings and
    pongs were free, before join and after, so a client could make the hub answer pings (or
    read pongs) as fast as it could send them for as long as it liked. Every frame now takes
    a token from the socket's bucket (limits.messages_per_second, message_burst); each frame
    over the rate is a strike, and limits.abuse_strikes of them close the socket with 4429."""
    ws = await _flood_socket(flood_hub, when)
    ws.send(b"".join(client_frame(opcode, b"x") for _ in range(10_000)))
    frames, code = await _frames_up_to_close(ws)
    assert code == Close.RATE_LIMITED
    errors = [p.decode_server(payload) for op, payload in frames if op == OP_TEXT]
    assert errors == [p.Error(code="rate-limited", message=e.message, retryable=e.retryable)
                      for e in errors if isinstance(e, p.Error)]
    assert len(errors) == FLOOD_LIMITS["abuse_strikes"]
    pongs = sum(op == OP_PONG for op, _ in frames)
    burst, strikes = FLOOD_LIMITS["message_burst"], FLOOD_LIMITS["abuse_strikes"]
    # the burst, the strikes but the last, and a token the bucket may have refilled meanwhile
    assert pongs <= (burst + strikes if opcode == OP_PING else 0), pongs
    ws.send(client_frame(OP_CLOSE, Close.NORMAL.to_bytes(2, "big")))
    assert await ws.eof(), "our close is still read after the hub's, and ends the connection"


async def test_each_fragment_of_a_message_counts_against_the_rate(flood_hub: HubHandle) -> None:
    """A message cost one token however many frames it came in, so fragmenting every message
    multiplied the frames a client could send within the rate. Now each frame takes one: five
    messages of four frames are twice the bucket of ten, and the socket is closed with 4429
    (five messages in one frame each are not)."""
    ws = await _flood_socket(flood_hub, "joined")
    message = b'{"type": "ping", "ts": 1}'
    in_four = (client_frame(OP_TEXT, message[:5], fin=False)
               + client_frame(OP_CONT, message[5:10], fin=False)
               + client_frame(OP_CONT, message[10:15], fin=False)
               + client_frame(OP_CONT, message[15:]))
    ws.send(in_four * 5)
    _, code = await _frames_up_to_close(ws)
    assert code == Close.RATE_LIMITED
    whole = await _flood_socket(flood_hub, "joined")
    whole.send(client_frame(OP_TEXT, message) * 5)
    assert [await whole.message() for _ in range(5)] == [p.Pong(ts=1)] * 5


async def test_a_message_in_max_fragments_frames_still_goes_through(
        flood_hub: HubHandle) -> None:
    """The fragment bound leaves fragmented messages alone up to limits.max_fragments frames
    (empty fragments included): the bound is on the frames of one message, not on fragmenting."""
    ws = await _flood_socket(flood_hub, "joined")
    message = b'{"type": "ping", "ts": 7}'
    max_fragments = FLOOD_LIMITS["max_fragments"]
    frames = [client_frame(OP_TEXT, message[:3], fin=False)]
    frames += [client_frame(OP_CONT, b"", fin=False)] * (max_fragments - 3)
    frames += [client_frame(OP_CONT, message[3:10], fin=False), client_frame(OP_CONT, message[10:])]
    assert len(frames) == max_fragments
    ws.send(b"".join(frames))
    assert await ws.message() == p.Pong(ts=7)
