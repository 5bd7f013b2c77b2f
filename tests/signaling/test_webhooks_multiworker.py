"""Webhooks with two hub worker processes sharing a real Redis: the worker delivering an event is
killed (SIGKILL, by PID) while the receiver holds its request, and the other worker delivers
it (same ``webhook-id``) once the lease runs out, then the meeting's later events, in order."""

from __future__ import annotations

import asyncio
import base64
import signal

import pytest

from signaling import protocol as p
from signaling.redis_store import connect
from signaling.testing.hub_process import HubProcess
from signaling.testing.meetings import join_token, start_meeting
from signaling.testing.ports import free_port
from signaling.testing.redis_server import RedisServer
from signaling.webhook_store import OWNER
from tests.support.webhook_receiver import Receiver
from tests.support.wsclient import WsClient
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"m" * 32).decode()
LEASE_S = 4.0


async def test_a_worker_killed_mid_delivery_leaves_the_event_to_another(
        redis: RedisServer) -> None:
    receiver = Receiver(SECRET)
    receiver.hold = asyncio.Event()
    await receiver.start()
    env = {"CONNVO_RTC_WEBHOOKS_URLS": receiver.url, "CONNVO_RTC_WEBHOOKS_SECRET": SECRET,
           "CONNVO_RTC_WEBHOOKS_TIMEOUT_S": str(LEASE_S - 1),
           "CONNVO_RTC_WEBHOOKS_LEASE_S": str(LEASE_S),
           "CONNVO_RTC_WEBHOOKS_POLL_INTERVAL_S": "0.1",
           "CONNVO_RTC_WEBHOOKS_BACKOFF_INITIAL_S": "0.1",
           "CONNVO_RTC_WEBHOOKS_BACKOFF_MAX_S": "0.5"}
    workers = [HubProcess(free_port(), redis.url, env=env) for _ in range(2)]
    client = connect(redis.url)
    host: WsClient | None = None
    try:
        for w in workers:
            w.start()
        for w in workers:
            await w.wait_ready()
        meeting_id, room_id = await start_meeting(workers[0].base_url)
        await wait_until(lambda: receiver.holding, 10,
                         what="meeting.started reaching the receiver (held there)")
        owners = await wait_until(lambda: client.hgetall(OWNER), 5, what="a lease owner")
        (owner,) = owners.values()
        pid = int(owner.decode().split()[0].split("_")[1])  # worker ids are w_<pid>_<hex>
        (delivering,) = [w for w in workers if w.proc is not None and w.proc.pid == pid]
        (survivor,) = [w for w in workers if w is not delivering]
        first_id = receiver.arrivals[0]
        delivering.kill(signal.SIGKILL)
        receiver.hold.set()
        # Later events of the meeting queue behind the orphaned one, on the survivor.
        host = await WsClient.connect(survivor.ws_url)
        await host.join(join_token(room_id, "host", "host"))
        await host.send({"type": "end"})
        await host.expect(p.RoomEndedMsg)
        await wait_until(lambda: len(receiver.types(meeting_id)) >= 4, LEASE_S + 15,
                         what="the survivor delivering every event after the lease ran out")
        assert receiver.types(meeting_id) == ["meeting.started", "participant.joined",
                                              "participant.left", "meeting.ended"]
        assert receiver.arrivals.count(first_id) >= 2  # the same event again, same id
        assert not receiver.rejected
        # the survivor's operator log tells the story
        lines = [line for line in survivor.log().splitlines()
                 if f"webhook {first_id} meeting.started -> " in line]
        assert any("delivered, HTTP 200" in line for line in lines), survivor.log()[-3000:]
    finally:
        if host is not None:
            await host.aclose()
        await client.aclose()
        for w in workers:
            w.cleanup()
        await receiver.stop()
