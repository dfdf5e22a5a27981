"""The network's directory: one JetStream KV entry per provider, for clients, gateways and ops.

Raw heartbeats are scoped to the providers of a model (agent/beats.py), so whoever serves nothing
reads this instead: each agent writes its last heartbeat (without the prefix filter) to key `<name>`
of bucket `wwwserve-directory` when it starts, when what it serves or accepts changes, and every
`REFRESH_S`; it deletes the key when it leaves; an entry not refreshed for `DIRECTORY_TTL_S` expires
and watchers hear a marker. Its traffic grows with the number of providers, not with requests.
Ops: `nats kv ls wwwserve-directory --js-domain wwwserve`.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from wwwserve.broker.streams import jetstream
from wwwserve.protocol import subjects
from wwwserve.protocol.messages import Heartbeat

log = structlog.get_logger(__name__)

REFRESH_S = 10.0
_KV_PREFIX = f"$KV.{subjects.DIRECTORY_BUCKET}."
_STREAM = f"KV_{subjects.DIRECTORY_BUCKET}"


def entry_body(beat: Heartbeat) -> bytes:
    """What a directory entry holds: the heartbeat without its (large, fast-changing) prefix filter."""
    return beat.model_copy(update={"prefix_filter": ""}).model_dump_json().encode()


async def publish_entry(nc: NATS, beat: Heartbeat) -> bool:
    """Write (or, for a goodbye beat with no models, delete) `beat.name`'s entry; False if JetStream fails."""
    js = jetstream(nc)
    subject = subjects.directory_put_subject(beat.name)
    try:
        if beat.models:
            await js.publish(subject, entry_body(beat), stream=_STREAM)
        else:
            await js.publish(subject, b"", headers={"KV-Operation": "DEL"}, stream=_STREAM)
    except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as e:
        log.debug("directory.write_failed", provider=beat.name, error=repr(e))
        return False
    return True


def _removed(msg: Msg) -> bool:
    hdrs = msg.headers or {}
    return hdrs.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in hdrs or not msg.data


class Directory:
    """A live copy of the directory: `await start()`, then read `entries` (name -> last heartbeat)."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self.entries: dict[str, Heartbeat] = {}
        self.gone: set[str] = set()  # listed once, then deleted (left) or expired (fell silent)
        self.available = False  # the bucket was reached; until then nothing can be said to be missing
        self.synced = asyncio.Event()  # every entry present at start was read
        self._sub: Subscription | None = None

    async def start(self) -> bool:
        """Watch the bucket (idempotent); False when JetStream cannot be reached (tried again later)."""
        if self._sub is not None:
            return True
        js = jetstream(self._nc)
        try:
            info = await js.stream_info(_STREAM)
            self._sub = await js.subscribe(
                f"{_KV_PREFIX}>",
                stream=_STREAM,
                cb=self._on_entry,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                idle_heartbeat=5.0,
                inactive_threshold=60.0,
            )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as e:
            log.debug("directory.unavailable", error=repr(e))
            return False
        self.available = True
        if not info.state.messages:
            self.synced.set()
        return True

    async def _on_entry(self, msg: Msg) -> None:
        name = msg.subject[len(_KV_PREFIX) :]
        if _removed(msg):
            self.entries.pop(name, None)
            self.gone.add(name)
        else:
            with contextlib.suppress(ValidationError, ValueError):
                self.entries[name] = Heartbeat.model_validate_json(msg.data)
                self.gone.discard(name)
        with contextlib.suppress(Exception):
            if msg.metadata.num_pending == 0:
                self.synced.set()

    def models(self) -> set[str]:
        """Every model some listed provider serves."""
        return {m for b in self.entries.values() for m in b.models}

    async def stop(self) -> None:
        """Stop watching."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def directory_size(nc: NATS) -> int:
    """How many providers the directory lists (0 when it cannot be read): sizes a newcomer's scope."""
    try:
        info = await jetstream(nc).stream_info(_STREAM)
    except (TimeoutError, nats.errors.Error, nats.js.errors.Error):
        return 0
    return int(info.state.messages)


async def read_directory(nc: NATS, wait_s: float = 2.0) -> list[Heartbeat] | None:
    """The directory's entries now, sorted by name; None when JetStream cannot be reached."""
    d = Directory(nc)
    if not await d.start():
        return None
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(d.synced.wait(), wait_s)
    await d.stop()
    return sorted((b for b in d.entries.values() if b.models), key=lambda b: b.name)
