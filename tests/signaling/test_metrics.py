"""/metrics, /healthz and /readyz as an operator scrapes them."""

from __future__ import annotations

import re

from signaling import protocol as p
from signaling.testing.hub import HubHandle
from tests.support.wsclient import WsClient


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def scrape(hub: HubHandle) -> str:
    session = await hub.session()
    async with session.get(hub.base_url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_metrics_follow_the_room(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("bob",))
    before = await scrape(hub)
    assert metric(before, "connvo_connected_peers") == 0
    assert metric(before, "connvo_active_rooms") == 0
    a, b = await WsClient.connect(hub.ws_url), await WsClient.connect(hub.ws_url)
    try:
        await a.join(hub.mint_token(room_id, "host", "host"))
        jb = await b.join(hub.mint_token(room_id, "bob"))
        for _ in range(3):
            await a.send({"type": "candidate", "to": jb.peer_id, "candidate": None})
            await b.expect(p.CandidateFrom)
        text = await scrape(hub)
        assert metric(text, "connvo_connected_peers") == 2
        assert metric(text, "connvo_active_rooms") == 1
        assert metric(text, "connvo_relayed_messages_total") == 3
        assert metric(text, "connvo_join_latency_seconds_count") == 2
        assert metric(text, 'connvo_ws_messages_total{type="candidate"}') == 3
    finally:
        await a.aclose()
        await b.aclose()


async def test_health_and_ready(hub: HubHandle) -> None:
    session = await hub.session()
    async with session.get(hub.base_url + "/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    async with session.get(hub.base_url + "/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ready"
