"""`push`: upload a shard folder to the Hugging Face Hub as a dataset repo that `load_dataset("ORG/NAME")` reads.

Before anything goes out, every shard is re-hashed against `dataset_card.json` (a mismatch is refused with one
line; nothing is uploaded). One commit then adds the tars listed in the card, the card itself, and a README
dataset card written here: a YAML header (license, task categories, tags, `configs` pointing at the tars,
`dataset_info` with the record features so images decode) and a body with the counts per task and source,
the skip reasons, the build config, the input fingerprints, the shard sha256s, and how the answers were
made and can be re-verified. Other files in the folder (progress files, notes) are not uploaded. Transient
Hub errors are retried (`datasets_build.hub`); the token is never printed.
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets_build.errors import ConfigError, DataError
from datasets_build.hub import with_retries
from datasets_build.shards.card import CARD_NAME, DatasetCard
from datasets_build.shards.reader import ShardSet

README_NAME = "README.md"
BASE_TASK_CATEGORIES = ("visual-question-answering", "image-text-to-text")
EXTRA_TASK_CATEGORIES = {"omni_generation": ("image-to-image",), "fast_tokens": ("robotics",)}


@dataclass
class DatasetPushConfig:
    """Which shard folder goes to which Hub dataset repo, and what its README declares."""

    folder: str = ""
    repo_id: str = ""
    private: bool = False
    license: str = "other"  # the SPDX-style id the Hub accepts; a corpus inherits its source data's terms
    revision: str | None = None
    commit_message: str = "Upload corpus shards"
    retries: int = 4
    backoff_s: float = 2.0
    endpoint: str | None = None  # default: HF_ENDPOINT or https://huggingface.co


# -- README ----------------------------------------------------------------------------------------
def _corpora_of(card: DatasetCard) -> list[str]:
    """The corpus names a folder's samples come from (a mix: each input's dataset name)."""
    config = card.build_config
    if config.get("corpus") == "vqa_mix":
        return [str(item.get("dataset") or item.get("mix_input")) for item in card.inputs if isinstance(item, dict)]
    return [str(config.get("name") or card.name)]


def how_made(card: DatasetCard) -> list[str]:
    """One line per corpus of the folder: how its questions and answers were made (from the builder's or the
    importer's own module documentation, the one place that describes it)."""
    from datasets_build.corpora.base import available_corpora, describe_corpus

    importer = card.build_config.get("importer")
    if importer:
        try:
            module = importlib.import_module(f"datasets_build.corpora.importers.{importer}")
            doc = " ".join((inspect.getdoc(module) or "").strip().split("\n\n", 1)[0].split())
        except ImportError:
            doc = "imported from a published corpus."
        return [f"- `{card.name}` (imported with `{importer}`): {doc}"]
    known = set(available_corpora())
    lines = []
    for name in dict.fromkeys(_corpora_of(card)):
        if name in known:
            lines.append(f"- `{name}`: {describe_corpus(name)}")
        else:
            lines.append(f"- `{name}`: samples copied from another shard set (see its own card).")
    return lines


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def dataset_readme(card: DatasetCard, repo_id: str, license: str = "other") -> str:
    """The README dataset card of a shard folder: YAML metadata `load_dataset` reads, then its provenance."""
    from datasets import DatasetInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    from datasets_build.shards.hf import FEATURES

    corpora = _corpora_of(card)
    categories = list(BASE_TASK_CATEGORIES)
    for corpus in corpora:
        categories += [c for c in EXTRA_TASK_CATEGORIES.get(corpus, ()) if c not in categories]
    data = DatasetCardData(
        license=license,
        task_categories=categories,
        tags=["vlm4vla", "robotics", "webdataset", *dict.fromkeys(c.replace("_", "-") for c in corpora)],
        pretty_name=card.name,
        size_categories=[_size_category(card.num_samples)],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": f"{card.name}-*.tar"}]}],
    )
    DatasetInfosDict({"default": DatasetInfo(features=FEATURES)}).to_dataset_card_data(data)
    config_text = json.dumps(card.build_config, indent=2, sort_keys=True)
    lines = [
        f"# {card.name}",
        "",
        (
            f"{card.num_samples} chat-format samples in {len(card.shards)} webdataset shards, built by the vlm4vla "
            f"toolkit (version {card.package_version}, record layout {card.schema_version})."
        ),
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo_id}", split="train")  # columns: json, images.npy (PIL images), targets.npy',
        "# json.meta is a JSON string: the facts each answer came from",
        "",
        "from datasets_build.shards import ShardSet  # the toolkit: checks the card and sha256, yields Samples",
        "",
        f'samples = ShardSet("{repo_id}")',
        "```",
        "",
        "For TRL's `SFTTrainer`: `datasets_build.shards.hf.to_trl(ds)` gives the `images` + `messages` columns.",
        "",
        "## How the answers were made and verified",
        "",
        *how_made(card),
        "",
        (
            "Every sample's `meta` records the facts its answer was derived from (object geometry, trajectories, "
            "gripper states, action chunks). `python -m datasets_build verify DIR` re-derives each answer from them "
            "and reports the error rate per task; imported answers are checked for their form only."
        ),
        "",
        "## Samples per task and source",
        "",
        *_table(
            ("task", *sorted(card.counts_per_source), "total"),
            [
                (task, *(per.get(s, 0) for s in sorted(card.counts_per_source)), card.counts_per_task[task])
                for task, per in sorted(card.counts_per_task_source.items())
            ],
        ),
        "",
        "## Skipped inputs",
        "",
        *(_table(("reason", "count"), sorted(card.skipped.items())) if card.skipped else ["none"]),
        "",
        "## Build config",
        "",
        "```json",
        config_text,
        "```",
        "",
        "## Input fingerprints",
        "",
        *_table(
            ("input", "fingerprint", "files", "bytes"),
            [
                (
                    f"`{item.get('path', item.get('mix_input', ''))}`",
                    f"`{item.get('fingerprint', item.get('card_sha256', ''))}`",
                    item.get("files", item.get("num_samples", "")),
                    item.get("bytes", ""),
                )
                for item in card.inputs
                if isinstance(item, dict)
            ],
        ),
        "",
        "## Shards",
        "",
        *_table(
            ("file", "samples", "bytes", "sha256"),
            [(f"`{s.name}`", s.num_samples, s.bytes, f"`{s.sha256}`") for s in card.shards],
        ),
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M" if n < 100_000_000 else "100M<n<1B"


# -- upload ----------------------------------------------------------------------------------------
def check_folder(folder: str | Path) -> DatasetCard:
    """The folder's card after every shard was re-hashed against it; DataError (one line) otherwise."""
    shard_set = ShardSet(folder, verify=True)
    if shard_set.card is None:  # ShardSet requires the card; kept for the type checker
        raise DataError("dataset card not found", Path(folder) / CARD_NAME)
    return shard_set.card


def push_dataset(cfg: DatasetPushConfig, token: str | None = None) -> str:
    """Check the folder, create the dataset repo if needed and upload it in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    if not cfg.repo_id or cfg.repo_id.count("/") != 1:
        raise ConfigError(f"push: repo_id must be ORG/NAME, got {cfg.repo_id!r}")
    folder = Path(cfg.folder)
    card = check_folder(folder)
    readme = dataset_readme(card, cfg.repo_id, cfg.license)
    token = token or get_token()
    if not token:
        raise ConfigError("push: no Hub token (set HF_TOKEN or run `hf auth login`)")
    api = HfApi(endpoint=cfg.endpoint, token=token)
    operations = [CommitOperationAdd(path_in_repo=README_NAME, path_or_fileobj=readme.encode())]
    operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=str(folder / CARD_NAME)))
    operations += [CommitOperationAdd(path_in_repo=s.name, path_or_fileobj=str(folder / s.name)) for s in card.shards]
    with_retries(
        lambda: api.create_repo(cfg.repo_id, private=cfg.private, repo_type="dataset", exist_ok=True),
        f"create_repo {cfg.repo_id}",
        cfg.retries,
        cfg.backoff_s,
        token,
    )
    commit = with_retries(
        lambda: api.create_commit(
            repo_id=cfg.repo_id,
            operations=operations,
            repo_type="dataset",
            revision=cfg.revision,
            commit_message=cfg.commit_message,
        ),
        f"upload {cfg.repo_id}",
        cfg.retries,
        cfg.backoff_s,
        token,
    )
    return str(getattr(commit, "commit_url", commit))
