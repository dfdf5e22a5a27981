"""The core network against real nats-servers: routing, codecs, streaming, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import msgpack
import nats
import pytest

from tests.conftest import SIM_FAST
from wwwserve.client import Client
from wwwserve.errors import UnknownModel
from wwwserve.protocol import headers as h
from wwwserve.protocol.messages import Reply, StreamChunk
from wwwserve.protocol.subjects import direct_subject, request_subject
from wwwserve.topology import LocalNetwork

MODEL = "sim/tiny-1.0"


@pytest.fixture
async def two(net: LocalNetwork) -> AsyncIterator[LocalNetwork]:
    """Two sim providers p1, p2 joined to the hub."""
    for name in ("p1", "p2"):
        await net.add_provider(name, engine="sim", model=[MODEL], engine_opt=SIM_FAST, max_concurrency=8)
    yield net


async def test_request_on_own_leaf_is_served_by_that_provider(two: LocalNetwork) -> None:
    async with Client(two.providers["p1"].url, timeout=10) as c:
        replies = [await c.complete(MODEL, f"hello {i}", max_tokens=4) for i in range(10)]
    assert {r.provider for r in replies} == {"p1"}
    assert all(r.hops == 0 and r.usage.completion_tokens == 4 and r.text for r in replies)


async def test_when_a_provider_leaves_a_peer_serves_through_the_hub(two: LocalNetwork) -> None:
    await two.stop_agent("p1")
    async with Client(two.providers["p1"].url, timeout=10) as c:
        r = await c.complete(MODEL, "still there?", max_tokens=3)
    assert r.provider == "p2"


async def test_json_in_json_out_and_msgpack_in_msgpack_out(two: LocalNetwork) -> None:
    nc = await nats.connect(two.providers["p1"].url)
    try:
        m = await nc.request(request_subject(MODEL), b'{"prompt":"hi","max_tokens":3}', timeout=5)
        body = json.loads(m.data)
        assert m.headers[h.CONTENT_TYPE] == h.JSON and body["final"] and body["provider"] == "p1"
        m = await nc.request(
            request_subject(MODEL), msgpack.packb({"prompt": "hi", "max_tokens": 3}), timeout=5
        )
        body = msgpack.unpackb(m.data)
        assert m.headers[h.CONTENT_TYPE] == h.MSGPACK and body["usage"]["completion_tokens"] == 3
    finally:
        await nc.close()


async def test_stream_chunks_arrive_in_order_then_final(two: LocalNetwork) -> None:
    async with Client(two.providers["p2"].url, timeout=10) as c:
        items = [i async for i in c.stream(MODEL, {"prompt": "count", "max_tokens": 12})]
    chunks, final = items[:-1], items[-1]
    assert all(isinstance(x, StreamChunk) for x in chunks) and isinstance(final, Reply)
    assert [x.seq for x in chunks] == list(range(12)) and final.seq == 12 and final.final
    assert "".join(x.delta for x in chunks) == final.text


LONG_ID = "r" * 5000

# (case, body, headers, code, words the message must contain: precise, not just "invalid")
BAD_INPUTS = [
    ("garbage bytes", b"\xc1\xff\x00garbage", {}, "bad_request", "not valid msgpack"),
    ("wrong types", b'{"prompt": 42, "max_tokens": "many"}', {}, "bad_request", "max_tokens"),
    ("missing prompt", b'{"max_tokens": 5}', {}, "bad_request", "`prompt` or `messages`"),
    ("oversize payload", b'{"prompt":"' + b"x" * 300_000 + b'"}', {}, "bad_request", "exceeds the limit"),
    ("negative max_tokens", b'{"prompt":"x","max_tokens":-3}', {}, "bad_request", "max_tokens"),
    ("expired deadline", b'{"prompt":"x"}', {h.DEADLINE: "1000"}, "deadline_exceeded", "deadline passed"),
    ("bad hop header", b'{"prompt":"x"}', {h.HOPS: "-2"}, "bad_request", "must be >= 0"),
    ("model mismatch", b'{"prompt":"x","model":"other"}', {}, "bad_request", "body names model"),
    ("max_tokens 10^12", b'{"prompt":"x","max_tokens":1000000000000}', {}, "bad_request", "context length"),
    (
        "10,000 stop strings",
        json.dumps({"prompt": "x", "stop": ["s"] * 10_000}).encode(),
        {},
        "bad_request",
        "at most 4 stop sequences",
    ),
    ("5,000-char request id", b'{"prompt":"x"}', {h.REQUEST_ID: LONG_ID}, "bad_request", "at most 128"),
    ("JSON array body", b'[{"prompt":"x"}]', {}, "bad_request", "got an array"),
    ("JSON string body", b'"hello"', {}, "bad_request", "got a string"),
    ("msgpack list body", msgpack.packb(["x"]), {}, "bad_request", "got an array"),
]


@pytest.mark.parametrize(
    ("case", "data", "hdrs", "code", "words"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
async def test_bad_input_gets_an_error_reply_with_its_code(
    two: LocalNetwork, case: str, data: bytes, hdrs: dict[str, str], code: str, words: str
) -> None:
    nc = await nats.connect(two.providers["p1"].url)
    try:
        m = await nc.request(request_subject(MODEL), data, timeout=5, headers=hdrs or None)
    finally:
        await nc.close()
    assert m.headers[h.ERROR] == code and int(m.headers[h.STATUS]) >= 400
    is_json = data.lstrip()[:1] in (b"{", b"[", b'"')
    assert m.headers[h.CONTENT_TYPE] == (h.JSON if is_json else h.MSGPACK)  # answered in the caller's codec
    body = json.loads(m.data) if is_json else msgpack.unpackb(m.data)
    assert body["code"] == code and words in body["message"], body["message"]
    assert len(body.get("request_id") or "") <= 128 and len(m.headers.get(h.REQUEST_ID, "")) <= 128


async def test_a_retry_of_a_finished_request_gets_the_same_answer_not_a_second_run(two: LocalNetwork) -> None:
    """A late retry (same request id) is answered from the remembered final message, byte for byte."""
    nc = await nats.connect(two.providers["p1"].url)
    try:
        ask = {h.REQUEST_ID: "retry-1"}
        subject = direct_subject("p1", MODEL)
        first = await nc.request(subject, b'{"prompt":"hi again","max_tokens":5}', timeout=5, headers=ask)
        served = two.providers["p1"].agent.stats.served
        again = await nc.request(subject, b'{"prompt":"hi again","max_tokens":5}', timeout=5, headers=ask)
    finally:
        await nc.close()
    assert first.headers[h.STATUS] == "200" and json.loads(first.data)["text"]
    assert again.data == first.data and again.headers == first.headers
    assert two.providers["p1"].agent.stats.served == served


async def test_direct_subject_for_unserved_model_says_unknown_model(two: LocalNetwork) -> None:
    nc = await nats.connect(two.hub_url)
    try:
        m = await nc.request(direct_subject("p1", "nope"), b'{"prompt":"x"}', timeout=5)
    finally:
        await nc.close()
    assert m.headers[h.ERROR] == "unknown_model"


async def test_nobody_serving_a_model_ends_in_unknown_model_at_the_deadline(two: LocalNetwork) -> None:
    async with Client(two.hub_url) as c:
        with pytest.raises(UnknownModel):
            await c.complete("no/such-model", "x", timeout=1.0)


async def test_heartbeats_fill_every_peer_table(two: LocalNetwork) -> None:
    beats = {p.beat.name: p.beat for p in two.providers["p1"].agent.peers.alive()}
    assert set(beats) == {"p2"} and beats["p2"].models == [MODEL] and beats["p2"].capacity == 8
