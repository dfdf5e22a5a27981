"""Prefix identity: prompts as chains of block hashes, and the compact filter agents advertise.

A prompt is split into blocks of BLOCK_TOKENS tokens (16, vLLM's KV block size); block i's hash covers
block i and, through the previous hash, everything before it, so equal hashes mean equal prefixes (as
vLLM's automatic prefix caching keys its blocks). Tokens here are the prompt's whitespace-separated
words: the same count the agent and the `sim` engine use, computable by anyone from the request alone
(clients and gateways compute nothing). A partial last block has no hash: it is never reused.

What a provider advertises (heartbeat field `prefix_filter`): a Bloom filter of FILTER_BYTES bytes over
the hashes of its cached *checkpoint* blocks (every CHECKPOINT-th block of a chain), most recently used
first, at most FILTER_ENTRIES of them. A dispatcher walks a request's checkpoints and stops at the first
one the filter lacks: `matched_tokens` is what it may expect cached there (false positives ~0.5% per
probe; a wrong guess costs one prefill, never a wrong answer). Base64 in the JSON heartbeat: 1,984
characters, so a beat stays within ~2.5 KB.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterable

BLOCK_TOKENS = 16
CHECKPOINT = 4  # every 4th block (64 tokens) is advertised
FILTER_BYTES = 1488  # 11,904 bits: base64 fits in 1,984 characters
FILTER_HASHES = 5
FILTER_ENTRIES = 1200  # at most this many checkpoints (76,800 tokens of prefixes) per beat
_MASK64 = (1 << 64) - 1


def block_hashes(text: str, known: list[int] | None = None) -> list[int]:
    """The chain of 64-bit hashes of the prompt's full blocks of BLOCK_TOKENS words.

    `known`: the hashes of a text this one starts with (a prompt, now followed by its answer), so only
    the blocks after them are hashed.
    """
    words = text.split()
    out: list[int] = list(known or [])
    prev = out[-1].to_bytes(8, "little") if out else b""
    for i in range(len(out), len(words) // BLOCK_TOKENS):
        block = " ".join(words[i * BLOCK_TOKENS : (i + 1) * BLOCK_TOKENS]).encode()
        digest = hashlib.blake2b(prev + block, digest_size=8).digest()
        out.append(int.from_bytes(digest, "little"))
        prev = digest
    return out


def checkpoints(hashes: list[int]) -> list[int]:
    """The hashes a filter holds and a dispatcher probes: the end of every CHECKPOINT blocks."""
    return hashes[CHECKPOINT - 1 :: CHECKPOINT]


@functools.lru_cache(maxsize=65536)
def _probe_bits(h: int) -> tuple[tuple[int, int], ...]:
    """(byte, mask) of each of `h`'s bits in a FILTER_BYTES filter, computed once per hash."""
    m = FILTER_BYTES * 8
    h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
    return tuple((p >> 3, 1 << (p & 7)) for p in ((h1 + i * h2) % m for i in range(FILTER_HASHES)))


class PrefixFilter:
    """A Bloom filter over block hashes (double hashing from the 64-bit hash itself)."""

    __slots__ = ("bits",)

    def __init__(self, bits: bytes | None = None) -> None:
        self.bits = bytearray(bits) if bits is not None else bytearray(FILTER_BYTES)

    def _positions(self, h: int) -> Iterable[int]:
        m = len(self.bits) * 8
        h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
        return ((h1 + i * h2) % m for i in range(FILTER_HASHES))

    def add(self, h: int) -> None:
        """Remember one block hash."""
        for p in self._positions(h & _MASK64):
            self.bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, h: int) -> bool:
        bits = self.bits
        if len(bits) != FILTER_BYTES:
            return all(bits[p >> 3] & (1 << (p & 7)) for p in self._positions(h & _MASK64))
        for i, mask in _probe_bits(h & _MASK64):  # one request probes the same hashes in every peer
            if not bits[i] & mask:
                return False
        return True

    def encode(self) -> str:
        """Base64 text for the JSON heartbeat ("" for an empty filter: nothing to carry)."""
        return base64.b64encode(bytes(self.bits)).decode() if any(self.bits) else ""

    @classmethod
    def decode(cls, text: str) -> PrefixFilter | None:
        """The filter a heartbeat carries, or None when absent or malformed (treated as empty)."""
        if not text:
            return None
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError:
            return None
        return cls(raw) if len(raw) == FILTER_BYTES else None

    @classmethod
    def of(cls, hashes: Iterable[int]) -> PrefixFilter:
        """A filter holding `hashes`."""
        f = cls()
        for h in hashes:
            f.add(h)
        return f


def matched_tokens(f: PrefixFilter | None, probes: list[int]) -> int:
    """Tokens of the request's prefix a provider with filter `f` likely holds (probes: `checkpoints`)."""
    if f is None:
        return 0
    n = 0
    for h in probes:
        if h not in f:
            break
        n += 1
    return n * CHECKPOINT * BLOCK_TOKENS
