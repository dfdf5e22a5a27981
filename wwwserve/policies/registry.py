"""The policies a provider can name (`--policy`): the built-in ones, or any `package.module:Class`.

The registry lives beside the policies, not in their base: the base knows no concrete policy.
"""

from __future__ import annotations

import importlib

from wwwserve.policies.base import Policy
from wwwserve.policies.centralized import CentralizedPolicy
from wwwserve.policies.default import DefaultPolicy
from wwwserve.policies.isolated import IsolatedPolicy

BUILTIN: dict[str, type] = {
    "default": DefaultPolicy,
    "wwwserve": DefaultPolicy,
    "isolated": IsolatedPolicy,
    "centralized": CentralizedPolicy,
}


def load_policy(spec: str) -> Policy:
    """Build a policy from `default`, `noprefix`, `isolated`, `centralized`, or `package.module:Class`."""
    if spec in ("noprefix", "wwwserve-noprefix"):  # the default policy, blind to prefix caches
        return DefaultPolicy(name="noprefix", prefix_aware=False)
    if spec in BUILTIN:
        return BUILTIN[spec]()  # type: ignore[no-any-return]
    module, sep, cls = spec.partition(":")
    if not sep:
        raise ValueError(f"unknown policy {spec!r}: use {sorted(BUILTIN)} or package.module:ClassName")
    return getattr(importlib.import_module(module), cls)()  # type: ignore[no-any-return]
