"""Protocol v1 without NATS: subject rule, codec, request validation."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wwwserve.errors import BadRequest
from wwwserve.protocol.codec import Codec, decode, detect, encode
from wwwserve.protocol.headers import DEADLINE, HOPS, REQUEST_ID, RequestIds, routing_from_headers
from wwwserve.protocol.messages import parse_request
from wwwserve.protocol.subjects import check_provider_name, model_token, request_subject


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"),
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen~Qwen2_5-7B-Instruct"),
        ("meta-llama/Llama-3.1-8B", "meta-llama~Llama-3_1-8B"),
        ("a b*c>d", "a-b-c-d"),
    ],
)
def test_model_token_rule(name: str, token: str) -> None:
    assert model_token(name) == token
    assert request_subject(name) == f"llm.request.{token}"


@given(st.text(min_size=1, max_size=80))
def test_model_token_is_always_one_safe_token(name: str) -> None:
    tok = model_token(name)
    assert tok and all(c.isascii() and (c.isalnum() or c in "_~-") for c in tok)


def test_provider_names_must_be_tokens() -> None:
    assert check_provider_name("p-1_a") == "p-1_a"
    with pytest.raises(ValueError):
        check_provider_name("p.1")


def test_codec_detects_json_by_header_or_body() -> None:
    assert detect(b'{"prompt":"x"}', None) is Codec.JSON
    assert detect(b"  {", {}) is Codec.JSON
    assert detect(msgpack.packb({"prompt": "x"}), None) is Codec.MSGPACK
    assert detect(b"\x81", {"Content-Type": "application/json"}) is Codec.JSON


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_codec_roundtrip_both_ways(value: object) -> None:
    for codec in Codec:
        assert decode(encode(value, codec), codec) == value


@pytest.mark.parametrize(
    "body",
    [
        {"max_tokens": 4},
        {"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
        {"prompt": 3},
        {"prompt": "x", "max_tokens": -1},
        {"prompt": "x", "max_tokens": "16"},
        {"prompt": "x", "temperature": 9},
        {"prompt": "x", "unknown_field": 1},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "y"}]},
        ["not", "a", "map"],
    ],
)
def test_bad_requests_are_refused_with_a_reason(body: object) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(body)
    assert info.value.message


def test_garbage_is_not_valid_json() -> None:
    with pytest.raises(BadRequest):
        decode(b"{not json", Codec.JSON)
    assert json.loads(encode({"a": 1}, Codec.JSON)) == {"a": 1}


def test_routing_defaults_and_errors() -> None:
    r = routing_from_headers(None, 5.0)
    assert r.hops == 0 and 4.0 < r.remaining_s() <= 5.0 and r.request_id
    with pytest.raises(BadRequest):
        routing_from_headers({HOPS: "-1"}, 5.0)
    with pytest.raises(BadRequest):
        routing_from_headers({DEADLINE: "soon"}, 5.0)


def test_batched_request_ids_are_distinct_url_safe_and_fill_only_missing_ids() -> None:
    ids = RequestIds()
    made = [ids() for _ in range(3 * RequestIds.PER_BATCH + 7)]  # across batch boundaries
    assert len(set(made)) == len(made)
    assert all(len(i) == 22 and i.replace("-", "a").replace("_", "a").isalnum() for i in made)
    assert routing_from_headers(None, 5.0, ids).request_id not in made
    assert routing_from_headers({REQUEST_ID: "mine"}, 5.0, ids).request_id == "mine"
