"""The `isolated` reference policy: a provider that never forwards (providers working alone)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from wwwserve.policies.base import ACCEPT, Decision, OwnState, PeerState, Reject, RequestInfo


class IsolatedPolicy:
    """Serve everything locally while the queue has room; never forward."""

    name = "isolated"

    def decide(
        self, req: RequestInfo, own: OwnState, peers: Sequence[PeerState], rng: random.Random
    ) -> Decision:
        """Accept while a slot or queue place is free, else `overloaded`."""
        if not own.healthy:
            return Reject("backend_error", f"{own.name}'s engine is unhealthy")
        if own.load < own.capacity + own.queue_limit:
            return ACCEPT
        return Reject("overloaded", f"{own.name} is full ({own.load} in, capacity {own.capacity})")
