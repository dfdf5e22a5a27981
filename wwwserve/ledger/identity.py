"""A provider's Ed25519 identity (NATS nkeys), kept in its data directory."""

from __future__ import annotations

import base64
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing
import nkeys


@dataclass(frozen=True)
class Identity:
    """A named key pair: `public_key` is the nkeys user key ("U..."), shown in heartbeats."""

    name: str
    seed: bytes

    @property
    def public_key(self) -> str:
        """The public key, nkeys-encoded."""
        return _keys(self.seed)[1]

    def sign(self, data: bytes) -> str:
        """A base64 Ed25519 signature of `data`."""
        return base64.b64encode(_keys(self.seed)[0].sign(data).signature).decode()


@functools.lru_cache(maxsize=4096)
def _keys(seed: bytes) -> tuple[nacl.signing.SigningKey, str]:
    """The signing key and encoded public key of a seed (decoding a seed costs more than signing)."""
    pair = nkeys.from_seed(bytearray(seed))
    return nacl.signing.SigningKey(pair._keys.encode()), str(pair.public_key.decode())


def load_or_create(data_dir: Path, name: str) -> Identity:
    """The identity in `data_dir/identity.seed`, created on first start: mode 0600, never half-written.

    The seed goes to a private temporary file first and is linked into place, so a crash leaves no
    empty or partial key, and an existing key is never overwritten.
    """
    path = data_dir / "identity.seed"
    if path.exists():
        return Identity(name, path.read_bytes().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    seed = bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    tmp = data_dir / f".identity.seed.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(seed)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if another process created the key first: then we use theirs
    except FileExistsError:
        return Identity(name, path.read_bytes().strip())
    finally:
        tmp.unlink(missing_ok=True)
    return Identity(name, seed)


def new_identity(name: str) -> Identity:
    """A fresh in-memory identity (tests, tools)."""
    return Identity(name, bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)))


@functools.lru_cache(maxsize=65536)
def _verify_key(public_key: str) -> nacl.signing.VerifyKey:
    """The verifying key of an encoded public key (cached: every record of a peer names the same key)."""
    return nacl.signing.VerifyKey(_raw_public_key(public_key))


def _raw_public_key(public_key: str) -> bytes:
    """The 32 key bytes of an nkeys user public key, checking prefix and CRC."""
    text = public_key.encode()
    raw = base64.b32decode(text + b"=" * (-len(text) % 8))
    if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
        raise ValueError("not an nkeys user public key")
    if bytes(raw[-2:]) != bytes(nkeys.crc16_checksum(raw[:-2])):
        raise ValueError("bad nkeys checksum")
    return raw[1:33]


def verify(public_key: str, data: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is `public_key`'s signature of `data`."""
    try:
        _verify_key(public_key).verify(data, base64.b64decode(signature))
        return True
    except (ValueError, TypeError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
