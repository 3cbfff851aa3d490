"""Shard IO: `ShardWriter` writes Samples to webdataset tars plus `dataset_card.json`; `ShardSet` reads them back."""

from datasets_build.shards.card import (
    CARD_NAME,
    SUPPORTED_SCHEMA_VERSIONS,
    DatasetCard,
    ShardEntry,
    fingerprint_path,
    package_version,
)
from datasets_build.shards.reader import (
    ShardSet,
    iter_tar_records,
    read_samples,
    resolve_hub_dataset,
    sha256_file,
)
from datasets_build.shards.writer import (
    DEFAULT_MAX_BYTES_PER_SHARD,
    DEFAULT_MAX_SAMPLES_PER_SHARD,
    ShardWriter,
    shard_file_name,
    tar_file_size,
)

__all__ = [
    "CARD_NAME",
    "DEFAULT_MAX_BYTES_PER_SHARD",
    "DEFAULT_MAX_SAMPLES_PER_SHARD",
    "SUPPORTED_SCHEMA_VERSIONS",
    "DatasetCard",
    "ShardEntry",
    "ShardSet",
    "ShardWriter",
    "fingerprint_path",
    "iter_tar_records",
    "package_version",
    "read_samples",
    "resolve_hub_dataset",
    "sha256_file",
    "shard_file_name",
    "tar_file_size",
]
