"""The `centralized` reference: the agent obeys assignments from one `wwwserve scheduler` process.

Not a production path (it makes the scheduler a single point of failure); it is the upper
reference for the benchmark. Inside the agent it behaves as `isolated`: the scheduler has already
chosen the provider, and the agent only serves.
"""

from __future__ import annotations

from wwwserve.policies.isolated import IsolatedPolicy


class CentralizedPolicy(IsolatedPolicy):
    """Serve what the scheduler sends; the choice happened before the request reached us."""

    name = "centralized"
