"""Body encoding: msgpack by default, JSON when the sender speaks JSON, answered in kind."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import msgpack

from wwwserve.errors import BadRequest
from wwwserve.protocol.headers import CONTENT_TYPE, JSON, MSGPACK

_JSON_STARTS = frozenset(bytes([c]) for c in b'{["-0123456789tfn')


class Codec(str, Enum):
    """The two body encodings of protocol v1."""

    MSGPACK = MSGPACK
    JSON = JSON


def detect(data: bytes, headers: dict[str, str] | None) -> Codec:
    """How to read a body: the Content-Type header wins, else a msgpack map, else what looks like JSON."""
    ctype = headers.get(CONTENT_TYPE) if headers else None
    if ctype:  # (a plain `nats req` sends none: no string work then)
        ctype = ctype.split(";")[0].strip().lower()
        if ctype in (JSON, "text/json"):
            return Codec.JSON
        if ctype in (MSGPACK, "application/x-msgpack"):
            return Codec.MSGPACK
    first = data[:1]
    if first and (0x80 <= first[0] <= 0x8F or first[0] in (0xDE, 0xDF)):
        return Codec.MSGPACK  # a msgpack map, the only msgpack body a request can be
    if data.lstrip()[:1] in _JSON_STARTS:
        return Codec.JSON  # any JSON value: a non-object is then refused as such, not as bad msgpack
    return Codec.MSGPACK


def decode(data: bytes, codec: Codec) -> Any:
    """Parse a body, turning any parse failure into a BadRequest that names the codec."""
    try:
        if codec is Codec.JSON:
            return json.loads(data)
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise BadRequest(f"body is not valid {codec.name.lower()}: {exc}") from exc


def encode(obj: Any, codec: Codec, packer: msgpack.Packer | None = None) -> bytes:
    """Serialize a body in the caller's codec (`packer`: a reusable `msgpack.Packer(use_bin_type=True)`,
    for a caller that encodes per request: `packb` builds a new one per call)."""
    if codec is Codec.JSON:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    packed: bytes = packer.pack(obj) if packer is not None else msgpack.packb(obj, use_bin_type=True)
    return packed
