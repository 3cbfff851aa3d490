"""Recipe stage `tiny_models`: config and run function, apart from the model code (recipes plan without torch)."""

from __future__ import annotations

from dataclasses import dataclass

from datasets_build.errors import ConfigError


@dataclass
class TinyModelsConfig:
    """Recipe stage `tiny_models`: which paper ids get tiny models, and in which HF home."""

    hf_home: str | None = None  # None = the recipe's $HF_HOME (required then: never the default cache)
    ids: list[str] | None = None  # None = all nine paper backbones
    families: list[str] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Hub ids and family names must be text (a mapping here broke planning with an unhashable TypeError)."""
        for name in ("ids", "families"):
            values = getattr(self, name)
            if values is not None and not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{name}: must be a list of strings, got {values!r}")


def install_tiny_models(cfg: TinyModelsConfig) -> dict[str, str]:
    """`install_tiny_backbones` as a recipe stage; {Hub id: snapshot folder}."""
    from datasets_build.tiny_models import install_tiny_backbones

    installed = install_tiny_backbones(cfg.hf_home, families=cfg.families, ids=cfg.ids, seed=cfg.seed)
    return {repo_id: str(folder) for repo_id, folder in sorted(installed.items())}
