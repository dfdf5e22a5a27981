"""A plain NATS client (no SDK: no retries, no headers) under load gets an answer for every request.

The design promises that anyone can `nats req llm.request.<model> '{...}'`. Four providers, 24
concurrent requesters, each sending one request after the other for 10 s: every request ends with
text or an explicit `overloaded`, never with silence or `no responders`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from wwwserve.topology import LocalNetwork

MODEL = "sim-model"
REQUESTERS = 24
DURATION_S = 10.0
DEADLINE_S = 30.0


async def plain_load(urls: list[str]) -> collections.Counter[str]:
    """REQUESTERS loops of plain `request()` for DURATION_S; outcome counts by kind."""
    counts: collections.Counter[str] = collections.Counter()
    conns = [await nats.connect(u) for u in urls]
    body = json.dumps({"prompt": "hello plain client", "max_tokens": 20}).encode()
    end = time.monotonic() + DURATION_S

    async def requester(i: int) -> None:
        nc = conns[i % len(conns)]
        while time.monotonic() < end:
            try:
                msg = await nc.request(f"llm.request.{MODEL}", body, timeout=DEADLINE_S)
            except NoRespondersError:
                counts["no_responders"] += 1
                continue
            except NatsTimeout:
                counts["no_reply"] += 1
                continue
            reply = json.loads(msg.data)
            if "text" in reply:
                counts["text"] += 1
            else:
                counts[str(reply.get("code"))] += 1

    try:
        await asyncio.gather(*(requester(i) for i in range(REQUESTERS)))
    finally:
        for nc in conns:
            await nc.close()
    return counts


async def test_plain_requesters_under_load_always_get_an_answer(
    net: LocalNetwork, measured: Callable[[str], None]
) -> None:
    for i in range(4):
        await net.add_provider(
            f"p{i}",
            engine="sim",
            model=[MODEL],
            max_concurrency=4,
            engine_opt={"decode_tpot_ms": "5"},
            heartbeat_interval_s=0.5,
        )
    urls = [h.url for h in net.providers.values()] + [net.hub_url]
    counts = await plain_load(urls)
    measured(f"outcomes in {DURATION_S:.0f} s: {dict(counts)}")
    assert counts["no_reply"] == 0, counts
    assert counts["no_responders"] == 0, counts
    assert set(counts) <= {"text", "overloaded"}, counts
    assert counts["text"] > 0.9 * sum(counts.values()), counts
