"""Stage 2: any VLM -> a VLA policy through one learnable <ActionQuery> token and an MLP head."""

from vla.api import PolicyLike

__all__ = ["PolicyLike"]
