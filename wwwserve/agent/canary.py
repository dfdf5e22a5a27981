"""Canaries: audit the routes a user request takes without passing an origin that duels.

A request published at a hub (a plain client, the gateway) or at a full origin's leaf is answered
by whichever provider the queue group picks, straight to the requester: no origin sees the answer,
so no duel follows (docs/duels.md, "Routes"). Canaries close that gap: an agent with spare capacity
sends, through a hub's client port (`--entry-url`) exactly as a user's SDK does, a copy of a recent
user request it saw, and has the answer dueled: a second provider serves the same request and a
judge compares (wwwserve/agent/duels.py). The server that answered cannot tell a canary from a user:
same entry point, same subject and headers, a prompt drawn from users' own prompts.

Rate: a canary follows an answered user request with probability `canary_rate` while some provider
of the model is new (little evidence on its answers), `canary_rate_min` once every provider has a
record. A canary cannot be aimed at a provider (the queue group picks), so a known suspect does not
raise the rate for everyone: the duels aimed at its forwarded answers do that, and the hubs route no
users to a provider proven bad (wwwserve/hubguard.py).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import nats.errors
import structlog

from wwwserve.agent.admission import Slots
from wwwserve.agent.peers import PeerTable
from wwwserve.agent.ports import LedgerReader, Spawn
from wwwserve.agent.settings import ProviderSettings
from wwwserve.agent.spare import network_has_spare
from wwwserve.client import Client
from wwwserve.errors import WWWServeError
from wwwserve.protocol.headers import Routing, new_request_id
from wwwserve.protocol.messages import CompletionRequest

log = structlog.get_logger(__name__)

SAMPLES = 64  # recent user requests a canary is drawn from
ENTRY_RETRY_S = 30.0  # after the entry point refused a connection
ENTRY_CONNECT_S = 5.0  # the first connection to the entry point
DEFAULT_HUB_CLIENT_PORT = 4222
DEFAULT_HUB_LEAF_PORT = 7422

# (request, model, request id, server, answer text) -> start a duel of that answer
AuditHook = Callable[[CompletionRequest, str, str, str, str], None]


def entry_url_of(settings: ProviderSettings) -> str | None:
    """Where canaries enter the network: `--entry-url`, else a hub given by its default leaf port
    (7422) at its default client port (4222), with the provider's hub credentials."""
    url = settings.entry_url
    if url is None:
        for hub in settings.hub:
            parts = urlsplit(hub if "://" in hub else f"nats-leaf://{hub}")
            if parts.port in (None, DEFAULT_HUB_LEAF_PORT) and parts.hostname:
                url = f"nats://{parts.hostname}:{DEFAULT_HUB_CLIENT_PORT}"
                break
    if url is None:
        return None
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    user = settings.hub_user or settings.name
    if settings.hub_password and "@" not in parts.netloc:
        netloc = f"{quote(user, safe='')}:{quote(settings.hub_password, safe='')}@{parts.netloc}"
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


@dataclass(frozen=True)
class CanaryConfig:
    """The provider settings canaries read (built with `of`: the defaults are the settings' own)."""

    entry_url: str | None  # a hub's client URL (with credentials); None: no canaries
    rate: float
    rate_min: float
    timeout_s: float = 60.0  # a canary's deadline, as the SDK's default

    @classmethod
    def of(cls, s: ProviderSettings) -> CanaryConfig:
        """The canary section of a provider's settings."""
        return cls(entry_url_of(s), s.canary_rate, min(s.canary_rate_min, s.canary_rate))


class Canaries:
    """Sends canaries for one provider and hands each answer to the duels.

    Receives its name and settings section, RNG and `spawn`; the peer table and the ledger (whose
    answers are still unknown), its slots (spare capacity: a full provider sends none) and `audit`,
    which starts a duel of an answer.
    """

    def __init__(
        self,
        *,
        name: str,
        config: CanaryConfig,
        rng: random.Random,
        spawn: Spawn,
        peers: PeerTable,
        ledger: LedgerReader,
        slots: Slots,
        audit: AuditHook,
    ) -> None:
        self.name = name
        self.config = config
        self.rng = rng
        self.spawn = spawn
        self.peers = peers
        self.ledger = ledger
        self.slots = slots
        self.audit = audit
        self.samples: collections.deque[tuple[str, CompletionRequest]] = collections.deque(maxlen=SAMPLES)
        self.sent = 0
        self._client: Client | None = None
        self._in_flight = 0
        self._entry_retry_at = 0.0

    def rate_for(self, model: str, exclude: Collection[str] = ()) -> float:
        """Canary probability per answered user request: high while a provider of `model` is new,
        `rate_min` once every one has a record (good, suspect, or bad and left to the hubs)."""
        c = self.config
        ev = self.ledger.view.evidence
        need = 0.0
        for p in self.peers.serving(model):
            name = p.beat.name
            if name in exclude or ev.proven_bad(name):
                continue
            need = max(need, ev.unproven(name))
            if need >= 1.0:
                break
        return c.rate_min + (c.rate - c.rate_min) * need

    def observe(self, req: CompletionRequest, model: str, routing: Routing) -> None:
        """A user's request was answered here: keep it as a sample; maybe send a canary."""
        if routing.hops > 0 or self.config.entry_url is None:
            return
        self.samples.append((model, req))
        slots = self.slots
        own = slots.running + slots.queued + self._in_flight
        spare = network_has_spare(self.peers.serving(model), own, slots.capacity)
        if not spare or time.monotonic() < self._entry_retry_at:  # the entry point refused us lately
            return
        if self.rng.random() >= self.rate_for(model, (self.name,)):
            return
        sample_model, sample = self.samples[self.rng.randrange(len(self.samples))]
        self._in_flight += 1
        self.spawn(self._send(sample_model, sample))

    async def _send(self, model: str, req: CompletionRequest) -> None:
        """One canary through the entry point, like a user's SDK request; its answer is dueled."""
        request_id = new_request_id()
        try:
            client = await self._entry()
            body = req.replace(stream=False).to_wire()
            reply = await client.request(model, body, timeout=self.config.timeout_s, request_id=request_id)
        except (WWWServeError, OSError, TimeoutError, nats.errors.Error) as exc:
            log.info("canary.failed", provider=self.name, error=repr(exc))
            if self._client is None:  # could not connect: try the entry point again later
                self._entry_retry_at = time.monotonic() + ENTRY_RETRY_S
            return
        finally:
            self._in_flight -= 1
        self.sent += 1
        if reply.provider != self.name:  # our own answers are not ours to audit
            self.audit(req, model, request_id, reply.provider, reply.text)

    async def _entry(self) -> Client:
        if self._client is None:
            assert self.config.entry_url is not None
            client = Client(self.config.entry_url, timeout=self.config.timeout_s)
            try:  # the SDK keeps trying a server it cannot reach: bound the first connection
                await asyncio.wait_for(client.connect(), ENTRY_CONNECT_S)
            except BaseException:
                await client.close()
                raise
            self._client = client
        return self._client

    async def close(self) -> None:
        """Close the entry connection."""
        if self._client is not None:
            await self._client.close()
            self._client = None
