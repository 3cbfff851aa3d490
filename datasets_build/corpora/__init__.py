"""Auxiliary corpora built from robot episodes: a registry of builders (`register_corpus`) and `build_corpus`."""

from datasets_build.corpora import (  # noqa: F401  (registers the built-in corpora)
    bridgevqa,
    fast_tokens,
    omni_generation,
    robo2vlm,
    robopoint,
    sharerobot,
    vica,
)
from datasets_build.corpora.base import (
    CorpusBuilder,
    EpisodeContext,
    EpisodeResult,
    available_corpora,
    episode_rng,
    make_builder,
    register_corpus,
)
from datasets_build.corpora.build import BuildConfig, build_corpus, verify_corpus

__all__ = [
    "BuildConfig",
    "CorpusBuilder",
    "EpisodeContext",
    "EpisodeResult",
    "available_corpora",
    "build_corpus",
    "episode_rng",
    "make_builder",
    "register_corpus",
    "verify_corpus",
]
