"""The `centralized` reference: the agent obeys assignments from one `wwwserve scheduler` process.

Not a production path (it makes the scheduler a single point of failure); it is the upper
reference for the benchmark. Agents with this policy do not join the `llm.request.<model>` queue
group: the scheduler alone takes requests there and sends each to its chosen provider's direct
subject. Inside the agent it behaves as `isolated`: the choice is made, the agent only serves.
"""

from __future__ import annotations

from wwwserve.policies.isolated import IsolatedPolicy


class CentralizedPolicy(IsolatedPolicy):
    """Serve what the scheduler sends; the choice happened before the request reached us."""

    name = "centralized"
    joins_queue_group = False  # only the scheduler listens on llm.request.<model>
