"""Dispatch policies: pure decisions from (request, own state, peer table) to accept/forward/reject."""

from wwwserve.policies.base import (
    Accept,
    Decision,
    Forward,
    OwnState,
    PeerState,
    Policy,
    Reject,
    RequestInfo,
)
from wwwserve.policies.registry import load_policy

__all__ = [
    "Accept",
    "Decision",
    "Forward",
    "OwnState",
    "PeerState",
    "Policy",
    "Reject",
    "RequestInfo",
    "load_policy",
]
