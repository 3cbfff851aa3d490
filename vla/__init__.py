"""Stage 2: any VLM -> a VLA policy through one learnable <ActionQuery> token and an MLP head.

`vla.Policy` (inference, implements `vla.api.PolicyLike`) is imported lazily so that `import vla` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vla.api import PolicyLike

if TYPE_CHECKING:
    from vla.policy import Policy

__all__ = ["Policy", "PolicyLike"]


def __getattr__(name: str) -> Any:
    if name == "Policy":
        from vla.policy import Policy

        return Policy
    raise AttributeError(f"module 'vla' has no attribute {name!r}")
