"""`vqa_mix`: deterministic weighted interleaving of several shard sets into one corpus.

The paper's VQA-Mix joins about 620k embodied pairs (ViCA, SpaceR, EmbSpatial, RefSpatial) with
360k general VQA. Any shard sets can be mixed: built corpora, imported ones, general VQA imported
with `importers.llava_json` / `importers.hf_dataset`, by folder, glob or Hub id.

Rules:
- Quotas. mode "count": exactly `count` samples of each input. mode "weight": `total` samples split
  by the weights with largest-remainder rounding (exact integers summing to `total`; ties go to the
  earlier input); `total: None` takes the largest total whose quotas every input can fill (the
  proportional fallback, opt-in). A quota above an input's size is an error naming the input,
  unless that input has `repeat: true`: then it is read in full passes, as often as needed.
- Selection within an input: in its card order. A quota below the input's size (or the last,
  partial pass of a repeated input) takes a seeded uniform subset of positions, kept in order, so
  a count of 1000 out of 100k samples spreads over the whole input instead of its first shard.
- Interleaving: smooth weighted round robin over the quotas (each step every input gains its
  quota, the input with the most credit is emitted and pays the total). Every prefix holds each
  input's share to within one sample, so a truncated read of the mix keeps the proportions.
- Samples are copied as encoded (`ShardWriter.write_record`): images are never decoded or
  re-compressed; only the JSON gains `meta["mix_input"]` (and `meta["mix_key"]`, the original key,
  when the key changed). Task and source stay. Inputs in the older record layout are upgraded to the
  current one on the way (same image bytes), so a mix is one layout whatever its inputs.
- Keys stay unique: the inputs whose keys collide with another input's get the input name as a
  key prefix; repeated passes get a `-r<pass>` suffix; a key longer than 80 characters is cut and
  ends with a hash of the full key.
- The card's build_config records mode, seed, the quotas (the exact per-input counts, checked
  after writing) and each input's size, passes and key prefix; the card's inputs hold each
  input's dataset name, size and the sha256 of its dataset card.
- Resumable (`resume=True`): the writer keeps `.progress.json`; a rerun skips the first
  `num_samples` records of the same deterministic stream (read from disk, but neither the JSON
  nor the images are decoded; their keys are checked against the completed shards) and writes
  the rest, giving shards and card byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from datasets_build.configs import build_config, load_yaml
from datasets_build.errors import ConfigError, DataError
from datasets_build.outputs import OVERWRITE_HINT
from datasets_build.progress import progress_bar
from datasets_build.sample import JSON_MEMBER, key_part, meta_text, record_json, upgrade_record
from datasets_build.shards import CARD_NAME, ShardSet, ShardWriter
from datasets_build.shards.writer import DEFAULT_MAX_BYTES_PER_SHARD, DEFAULT_MAX_SAMPLES_PER_SHARD, tar_keys

MODES = ("weight", "count")
MAX_KEY = 80
_HASH_CHARS = 10


@dataclass
class MixInput:
    """One shard set to mix: `path` is a folder, glob or Hub id (as `ShardSet` takes it).

    `weight` is used in mode "weight", `count` in mode "count"; `name` (default: the input's dataset
    name) tags its samples (`meta["mix_input"]`) and prefixes colliding keys; `repeat` cycles the
    input when its quota exceeds its size.
    """

    path: str = ""
    weight: float = 1.0
    count: int | None = None
    name: str = ""
    repeat: bool = False


@dataclass
class MixConfig:
    """A mix of `inputs` into the shard folder `out` (see the module docstring for the rules)."""

    inputs: list[MixInput] = field(default_factory=list)
    out: str = "runs/corpora/vqa_mix"
    mode: str = "weight"  # "weight": `total` split by weights; "count": each input's `count`
    total: int | None = None  # mode weight: samples in all (None: as many as the inputs allow)
    seed: int = 0  # seeds the subset of each input that is taken
    name: str = "vqa_mix"
    max_samples_per_shard: int = DEFAULT_MAX_SAMPLES_PER_SHARD
    max_bytes_per_shard: int = DEFAULT_MAX_BYTES_PER_SHARD
    overwrite: bool = False
    resume: bool = False
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        self.inputs = [MixInput(**item) if isinstance(item, dict) else item for item in self.inputs]
        if not self.inputs:
            raise ConfigError("mix: inputs: give at least one input")
        if self.mode not in MODES:
            raise ConfigError(f"mix: mode: must be one of {MODES}, got {self.mode!r}")
        if not self.out:
            raise ConfigError("mix: out: an output folder is required")
        for i, item in enumerate(self.inputs):
            item.path = os.fspath(item.path)
            where = f"mix: inputs[{i}]"
            if not item.path:
                raise ConfigError(f"{where}.path: required")
            if item.name and key_part(item.name, 32, "") != item.name:
                raise ConfigError(f"{where}.name: {item.name!r} may hold only letters, digits, '_' and '-' (<= 32)")
            if self.mode == "count":
                if item.count is None or item.count < 0:
                    raise ConfigError(f"{where}.count: mode count needs a count >= 0, got {item.count}")
            else:
                if item.count is not None:
                    raise ConfigError(f"{where}.count: only used in mode count (mode weight takes weight)")
                if not math.isfinite(item.weight) or item.weight <= 0:
                    raise ConfigError(f"{where}.weight: must be > 0, got {item.weight}")
        if self.mode == "count":
            wanted = sum(item.count or 0 for item in self.inputs)
            if self.total is not None and self.total != wanted:
                raise ConfigError(f"mix: total: is {self.total} but the counts sum to {wanted} (leave it unset)")
            if wanted < 1:
                raise ConfigError("mix: the counts sum to 0")
        elif self.total is not None and self.total < 1:
            raise ConfigError(f"mix: total: must be >= 1, got {self.total}")


@dataclass(frozen=True)
class _Planned:
    """An opened input with its resolved name, size, quota and key prefix."""

    name: str
    spec: MixInput
    shards: ShardSet
    available: int
    quota: int
    prefix: str | None


# -- quotas ----------------------------------------------------------------------------------------
def largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    """`total` split in proportion to `weights` as integers that sum to `total` exactly.

    Each share is floored, then the leftover units go to the largest fractional parts (ties: the
    earlier index), so no share is off its exact proportion by one or more.
    """
    if total < 0 or not weights or any(w <= 0 for w in weights):
        raise ValueError("need total >= 0 and positive weights")
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def fitting_total(weights: Sequence[float], available: Sequence[int | None]) -> int:
    """The largest total whose `largest_remainder` quotas fit every input (None = unbounded)."""
    bounded = [(w, n) for w, n in zip(weights, available, strict=True) if n is not None]
    if not bounded:
        raise ConfigError("mix: total: required when every input repeats")
    whole = sum(weights)
    total = min(math.floor(n * whole / w) for w, n in bounded) + len(weights)
    while total > 0:
        quotas = largest_remainder(weights, total)
        if all(n is None or q <= n for q, n in zip(quotas, available, strict=True)):
            return total
        total -= 1
    return 0


def smooth_order(quotas: Sequence[int]) -> Iterator[int]:
    """Input indices in smooth weighted round-robin order: index i appears exactly quotas[i] times.

    After any n steps each input has been picked within one of n * quota / total times.
    """
    total = sum(quotas)
    credit = [0] * len(quotas)
    active = [i for i, q in enumerate(quotas) if q > 0]
    for _ in range(total):
        best = active[0]
        for i in active:
            credit[i] += quotas[i]
            if credit[i] > credit[best]:
                best = i
        credit[best] -= total
        yield best


# -- planning --------------------------------------------------------------------------------------
def _open_inputs(cfg: MixConfig) -> list[tuple[str, MixInput, ShardSet]]:
    opened = []
    names: dict[str, int] = {}
    for i, item in enumerate(cfg.inputs):
        try:
            shards = ShardSet(item.path, verify=True)  # a corrupt shard is refused, never copied
        except DataError as exc:
            raise DataError(f"cannot open mix input: {exc}", f"inputs[{i}]", "path") from exc
        card_name = shards.card.name if shards.card is not None else ""
        name = item.name or key_part(card_name, 32, f"input{i}")
        if name in names:
            raise ConfigError(
                f"mix: inputs[{names[name]}] and inputs[{i}] are both named {name!r}: give them distinct names"
            )
        names[name] = i
        opened.append((name, item, shards))
    return opened


def _quotas(cfg: MixConfig, opened: list[tuple[str, MixInput, ShardSet]]) -> list[int]:
    sizes = [len(shards) for _, _, shards in opened]
    if cfg.mode == "count":
        quotas = [item.count or 0 for _, item, _ in opened]
    else:
        weights = [item.weight for _, item, _ in opened]
        limits = [None if item.repeat else n for (_, item, _), n in zip(opened, sizes, strict=True)]
        total = cfg.total if cfg.total is not None else fitting_total(weights, limits)
        if total < 1:
            raise DataError("the inputs hold no samples to mix", cfg.out)
        quotas = largest_remainder(weights, total)
    for (name, item, _), quota, size in zip(opened, quotas, sizes, strict=True):
        if quota > size and (not item.repeat or size == 0):
            hint = "" if size == 0 else "; lower the count/total or set repeat: true on it"
            raise DataError(f"needs {quota} samples but holds {size}{hint}", f"mix input {name} ({item.path})")
    return quotas


def _prefixes(opened: list[tuple[str, MixInput, ShardSet]]) -> list[str | None]:
    """Key prefixes: the input name for inputs whose keys collide with another input's, else None.

    If prefixing only the colliding inputs still leaves a collision, every input is prefixed.
    """
    key_sets = [{key for path in shards.shards for key in tar_keys(path)} for _, _, shards in opened]
    names = [name for name, _, _ in opened]

    def colliding(prefixes: list[str | None]) -> set[int]:
        final = [{_with_prefix(k, p) for k in keys} for keys, p in zip(key_sets, prefixes, strict=True)]
        hit: set[int] = set()
        for i in range(len(final)):
            for j in range(i + 1, len(final)):
                if not final[i].isdisjoint(final[j]):
                    hit.update((i, j))
        return hit

    prefixes: list[str | None] = [None] * len(opened)
    clash = colliding(prefixes)
    if not clash:
        return prefixes
    prefixes = [names[i] if i in clash else None for i in range(len(opened))]
    if colliding(prefixes):
        prefixes = list(names)
    return prefixes


def _with_prefix(key: str, prefix: str | None) -> str:
    return key if prefix is None else f"{prefix}-{key}"


def out_key(key: str, prefix: str | None, pass_index: int) -> str:
    """The mixed sample's key: `[prefix-]key[-r<pass>]`, cut to 80 characters with a hash of the whole."""
    full = _with_prefix(key, prefix) + (f"-r{pass_index}" if pass_index else "")
    if len(full) <= MAX_KEY:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH_CHARS]
    return f"{full[: MAX_KEY - _HASH_CHARS - 1]}-{digest}"


def _plan(cfg: MixConfig) -> list[_Planned]:
    opened = _open_inputs(cfg)
    quotas = _quotas(cfg, opened)
    prefixes = _prefixes(opened)
    return [
        _Planned(name, item, shards, len(shards), quota, prefix)
        for (name, item, shards), quota, prefix in zip(opened, quotas, prefixes, strict=True)
    ]


# -- streaming -------------------------------------------------------------------------------------
def _selected_positions(plan: _Planned, seed: int) -> list[int]:
    """Positions taken in the last (partial) pass of an input, sorted; all of them when it is full."""
    partial = plan.quota % plan.available if plan.available else 0
    if partial == 0:
        return []
    rng = random.Random(f"vqa_mix:{seed}:{plan.name}")
    return sorted(rng.sample(range(plan.available), partial))


def _input_records(plan: _Planned, seed: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(pass index, raw record) of one input: full passes in order, then the seeded partial pass."""
    full_passes = plan.quota // plan.available if plan.available else 0
    for pass_index in range(full_passes):
        seen = 0
        for record in plan.shards.records():
            seen += 1
            yield pass_index, record
        if seen != plan.available:
            raise DataError(f"yielded {seen} samples, its card lists {plan.available}", f"mix input {plan.name}")
    wanted = _selected_positions(plan, seed)
    if not wanted:
        return
    next_wanted = 0
    for position, record in enumerate(plan.shards.records()):
        if position == wanted[next_wanted]:
            yield full_passes, record
            next_wanted += 1
            if next_wanted == len(wanted):
                return
    raise DataError(f"holds fewer samples than its card lists ({plan.available})", f"mix input {plan.name}")


def mix_stream(plans: list[_Planned], seed: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(input index, output key, raw record) of the whole mix, in its deterministic order."""
    streams = [_input_records(plan, seed) for plan in plans]
    for index in smooth_order([plan.quota for plan in plans]):
        try:
            pass_index, record = next(streams[index])
        except StopIteration:
            raise DataError("ran out of samples", f"mix input {plans[index].name}") from None
        yield index, out_key(str(record["__key__"]), plans[index].prefix, pass_index), record


def _mixed_record(record: dict[str, Any], key: str, input_name: str) -> dict[str, Any]:
    """The record (layout 2; a layout-1 input is upgraded, images as encoded) under its new key, with
    `meta.mix_input` (and `meta.mix_key` if the key changed) set."""
    where = f"{record.get('__url__', 'shard')}:{record['__key__']}"
    upgraded = upgrade_record(record, str(record.get("__url__", "shard")))
    payload = json.loads(upgraded[JSON_MEMBER])
    try:
        meta = json.loads(payload["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"meta is not a JSON object string ({exc})", where, "meta") from exc
    if not isinstance(meta, dict):
        raise DataError("meta must be an object", where, "meta")
    meta["mix_input"] = input_name
    if key != record["__key__"]:
        meta["mix_key"] = record["__key__"]
    payload["meta"] = meta_text(meta)
    upgraded[JSON_MEMBER] = record_json(payload)
    upgraded["__key__"] = key
    return upgraded


# -- entry -----------------------------------------------------------------------------------------
def _card_sha256(shards: ShardSet) -> str | None:
    path = shards.root / CARD_NAME
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _build_record(cfg: MixConfig, plans: list[_Planned]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(card build_config, card inputs): everything that defines the output, nothing run-specific."""
    build = {
        "name": cfg.name,
        "corpus": "vqa_mix",
        "mode": cfg.mode,
        "total": sum(plan.quota for plan in plans),
        "requested_total": cfg.total,
        "seed": cfg.seed,
        "interleave": "smooth_weighted_round_robin",
        "selection": "in_order_seeded_subset",
        "quotas": {plan.name: plan.quota for plan in plans},
        "inputs": [
            {
                "name": plan.name,
                "path": plan.spec.path,
                "weight": plan.spec.weight,
                "count": plan.spec.count,
                "repeat": plan.spec.repeat,
                "available": plan.available,
                "quota": plan.quota,
                "passes": -(-plan.quota // plan.available) if plan.available else 0,
                "key_prefix": plan.prefix,
            }
            for plan in plans
        ],
    }
    inputs = [
        {
            "path": plan.spec.path,
            "mix_input": plan.name,
            "dataset": plan.shards.card.name if plan.shards.card is not None else None,
            "num_samples": plan.available,
            "card_sha256": _card_sha256(plan.shards),
        }
        for plan in plans
    ]
    return build, inputs


def mix_shards(cfg: MixConfig) -> dict[str, Any]:
    """Write the mix of `cfg.inputs` into `cfg.out` (resuming an interrupted run with `cfg.resume`); summary."""
    plans = _plan(cfg)
    build, inputs = _build_record(cfg, plans)
    total = build["total"]
    written = [0] * len(plans)
    with ShardWriter(
        cfg.out,
        cfg.name,
        max_samples_per_shard=cfg.max_samples_per_shard,
        max_bytes_per_shard=cfg.max_bytes_per_shard,
        overwrite=cfg.overwrite,
        build_config=build,
        inputs=inputs,
        resume=cfg.resume,
    ) as writer:
        resumed = writer.resumed_from
        bar = progress_bar(total=total, initial=resumed, desc=f"mix {cfg.name}", unit="sample", enabled=cfg.progress)
        with bar:
            for step, (index, key, record) in enumerate(mix_stream(plans, cfg.seed)):
                written[index] += 1
                if step < resumed:
                    if key not in writer:
                        raise DataError(
                            f"sample {step} ({key}) is not in the completed shards: the inputs changed since the "
                            f"interrupted run ({OVERWRITE_HINT} and rebuild)",
                            cfg.out,
                        )
                    continue
                writer.write_record(_mixed_record(record, key, plans[index].name))
                bar.update()
        counts = {plan.name: n for plan, n in zip(plans, written, strict=True)}
        if counts != build["quotas"] or writer.num_samples != total:
            raise DataError(f"wrote {counts}, planned {build['quotas']}", cfg.out)
    card = writer.card
    assert card is not None
    return {
        "name": cfg.name,
        "out": cfg.out,
        "samples": card.num_samples,
        "per_input": counts,
        "per_task": dict(sorted(card.counts_per_task.items())),
        "shards": len(card.shards),
        "resumed_from": resumed,
    }


def parse_input_spec(text: str, mode: str = "weight") -> MixInput:
    """A command-line input `[NAME=]PATH[@N]`: N is the weight in mode weight, the count in mode count."""
    name, sep, rest = text.partition("=")
    if not sep or "/" in name or not name:
        name, rest = "", text
    path, at, number = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if not path:
        raise ConfigError(f"mix: input {text!r}: expected [NAME=]PATH[@N]")
    item = MixInput(path=path, name=name)
    if mode == "count":
        if not at or not number.isdigit():
            raise ConfigError(f"mix: input {text!r}: mode count needs an integer count, as PATH@N")
        item.count = int(number)
    elif at:
        try:
            item.weight = float(number)
        except ValueError as exc:
            raise ConfigError(f"mix: input {text!r}: {number!r} is not a number") from exc
    return item


def load_mix_config(
    config_file: str | None = None,
    inputs: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    **fields: Any,
) -> MixConfig:
    """A MixConfig from an optional YAML file, then `fields` (None = not given), then `key=value` overrides.

    `inputs` given as `[NAME=]PATH[@N]` specs (see `parse_input_spec`) replace the file's inputs.
    """
    layers: list[Mapping[str, Any]] = [load_yaml(config_file)] if config_file else []
    given = {k: v for k, v in fields.items() if v is not None}
    if inputs:
        mode = str(given.get("mode") or (layers[0].get("mode") if layers else None) or "weight")
        given["inputs"] = [asdict(parse_input_spec(text, mode)) for text in inputs]
    return build_config(MixConfig, *layers, given, overrides, where="mix")
