"""FAST action tokenizer: quantile normalisation, DCT along time, rounding, then byte-pair encoding.

An action chunk (T, D) is normalised per dimension to [-1, 1] from the q01/q99 statistics, transformed with
an orthonormal DCT-II along time (per dimension), scaled by `scale` and rounded to integers, flattened
row-major (lowest frequency first, dimensions interleaved), each integer v written as the character
chr(v - min_token), and the string compressed with a BPE trained on such strings (`tokenizers`, the full
integer alphabet as initial alphabet, min_frequency 2). Decoding inverts every step; a token sequence that
does not give exactly T*D integers decodes to zeros with `valid=False` so rollouts can count it and go on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.fft import dct, idct
from tokenizers import Tokenizer, models, trainers

from datasets_build.errors import ConfigError, DataError, one_line

CONFIG_NAME = "fast_config.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT_VERSION = 1


@dataclass
class FastConfig:
    """Everything besides the BPE merges that encoding and decoding need (saved as fast_config.json)."""

    horizon: int
    action_dim: int
    scale: float = 10.0
    vocab_size: int = 1024
    min_token: int = 0  # smallest rounded coefficient of the fit data (character 0)
    max_token: int = 0  # largest one; integers outside [min_token, max_token] are clipped when encoding
    q01: list[float] = field(default_factory=list)
    q99: list[float] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def check(self, where: str = "FAST config") -> None:
        """One-line ConfigError when fields have the wrong type or are inconsistent."""
        for name in ("horizon", "action_dim", "vocab_size", "min_token", "max_token", "format_version"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where}: {name} must be an integer, got {value!r}")
        if not isinstance(self.scale, int | float) or isinstance(self.scale, bool) or not np.isfinite(self.scale):
            raise ConfigError(f"{where}: scale must be a finite number, got {self.scale!r}")
        for name in ("q01", "q99"):
            values = getattr(self, name)
            if not isinstance(values, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in values
            ):
                raise ConfigError(f"{where}: {name} must be a list of finite numbers")
        if self.horizon < 1 or self.action_dim < 1:
            raise ConfigError(f"{where}: horizon and action_dim must be >= 1")
        if self.scale <= 0:
            raise ConfigError(f"{where}: scale must be > 0")
        if len(self.q01) != self.action_dim or len(self.q99) != self.action_dim:
            raise ConfigError(f"{where}: q01/q99 need {self.action_dim} values (action_dim)")
        if self.max_token < self.min_token:
            raise ConfigError(f"{where}: max_token < min_token")
        if self.max_token - self.min_token >= 0x110000:  # each coefficient is one unicode character
            raise ConfigError(f"{where}: max_token - min_token must be < {0x110000}")


@dataclass
class DecodedChunk:
    """A decoded action chunk (T, D) and whether the token sequence was well formed."""

    actions: np.ndarray
    valid: bool
    reason: str = ""


def quantile_bounds(stats: dict[str, Any], action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """q01/q99 of the `action` feature from a stats.json dict (the `stats` command's layout) or a bare one."""
    feature = stats.get("action", stats)
    try:
        q01 = np.asarray(feature["q01"], dtype=np.float64).reshape(-1)
        q99 = np.asarray(feature["q99"], dtype=np.float64).reshape(-1)
    except KeyError as exc:
        raise DataError("no q01/q99 statistics", "stats", f"action.{exc.args[0]}") from exc
    if len(q01) != action_dim or len(q99) != action_dim:
        raise DataError(f"{len(q01)}-D statistics for {action_dim}-D actions", "stats", "action.q01")
    return q01, q99


class FastTokenizer:
    """Encode (T, D) action chunks to FAST token ids and back; `fit` trains one from chunks."""

    def __init__(self, config: FastConfig, bpe: Tokenizer) -> None:
        config.check()
        self.config = config
        self.bpe = bpe
        self._q01 = np.asarray(config.q01, dtype=np.float64)
        span = np.asarray(config.q99, dtype=np.float64) - self._q01
        self._span = np.where(span > 1e-8, span, 1.0)  # constant dimensions normalise to -1

    # -- numeric steps ---------------------------------------------------------------------------
    def normalize(self, chunks: np.ndarray) -> np.ndarray:
        """(..., T, D) actions -> [-1, 1] by q01/q99 (clipped)."""
        return np.clip(2.0 * (np.asarray(chunks, dtype=np.float64) - self._q01) / self._span - 1.0, -1.0, 1.0)

    def denormalize(self, normed: np.ndarray) -> np.ndarray:
        """Inverse of `normalize` (within the clipping range)."""
        return (np.asarray(normed, dtype=np.float64) + 1.0) / 2.0 * self._span + self._q01

    def coefficients(self, chunks: np.ndarray) -> np.ndarray:
        """(N, T, D) actions -> (N, T*D) rounded, scaled DCT coefficients (int64), row-major over (T, D)."""
        coeff = dct(self.normalize(chunks), type=2, norm="ortho", axis=-2)
        ints = np.rint(coeff * self.config.scale).astype(np.int64)
        return ints.reshape(ints.shape[0], -1)

    def from_coefficients(self, ints: np.ndarray) -> np.ndarray:
        """(N, T*D) integers -> (N, T, D) actions."""
        cfg = self.config
        coeff = np.asarray(ints, dtype=np.float64).reshape(-1, cfg.horizon, cfg.action_dim) / cfg.scale
        return self.denormalize(idct(coeff, type=2, norm="ortho", axis=-2))

    def _strings(self, ints: np.ndarray) -> list[str]:
        offset = np.clip(ints, self.config.min_token, self.config.max_token) - self.config.min_token
        return ["".join(map(chr, row)) for row in offset.tolist()]

    # -- public API ------------------------------------------------------------------------------
    def _check_chunks(self, chunks: np.ndarray) -> np.ndarray:
        arr = np.asarray(chunks, dtype=np.float64)
        cfg = self.config
        if arr.ndim != 3 or arr.shape[1:] != (cfg.horizon, cfg.action_dim):
            raise DataError(
                f"expected chunks of shape (N, {cfg.horizon}, {cfg.action_dim}), got {arr.shape}", "actions", "shape"
            )
        if not np.isfinite(arr).all():
            raise DataError("NaN or inf in an action chunk", "actions", "values")
        return arr

    def encode_batch(self, chunks: np.ndarray) -> list[list[int]]:
        """Token ids of each chunk in an (N, T, D) array."""
        arr = self._check_chunks(chunks)
        return [e.ids for e in self.bpe.encode_batch(self._strings(self.coefficients(arr)), add_special_tokens=False)]

    def encode(self, chunk: np.ndarray) -> list[int]:
        """Token ids of one (T, D) chunk."""
        return self.encode_batch(np.asarray(chunk)[None])[0]

    def clipped_fraction(self, chunks: np.ndarray) -> float:
        """Share of coefficients outside the fitted [min_token, max_token] range (clipped when encoding)."""
        ints = self.coefficients(self._check_chunks(chunks))
        return float(np.mean((ints < self.config.min_token) | (ints > self.config.max_token)))

    def decode(self, ids: Sequence[int]) -> DecodedChunk:
        """One token sequence -> (T, D) actions; malformed sequences give zeros and `valid=False`."""
        cfg = self.config
        zeros = np.zeros((cfg.horizon, cfg.action_dim), dtype=np.float32)
        pieces = []
        for i in ids:
            piece = self.bpe.id_to_token(int(i)) if 0 <= int(i) < self.bpe.get_vocab_size() else None
            if piece is None:
                return DecodedChunk(zeros, False, f"unknown token id {i}")
            pieces.append(piece)
        values = [ord(c) + cfg.min_token for c in "".join(pieces)]
        if len(values) != cfg.horizon * cfg.action_dim:
            return DecodedChunk(zeros, False, f"{len(values)} coefficients, expected {cfg.horizon * cfg.action_dim}")
        actions = self.from_coefficients(np.asarray(values)[None])[0].astype(np.float32)
        return DecodedChunk(actions, True)

    def decode_batch(self, sequences: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(N, T, D) actions and (N,) validity flags for several token sequences."""
        decoded = [self.decode(ids) for ids in sequences]
        cfg = self.config
        if not decoded:
            return np.zeros((0, cfg.horizon, cfg.action_dim), np.float32), np.zeros(0, bool)
        return np.stack([d.actions for d in decoded]), np.array([d.valid for d in decoded])

    @property
    def vocab_size(self) -> int:
        """Number of BPE tokens (at most `config.vocab_size`)."""
        return int(self.bpe.get_vocab_size())

    # -- fitting ---------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        chunks: np.ndarray,
        stats: dict[str, Any],
        vocab_size: int = 1024,
        scale: float = 10.0,
    ) -> FastTokenizer:
        """Train the BPE on (N, T, D) chunks normalised with `stats`' q01/q99; deterministic for equal inputs."""
        arr = np.asarray(chunks, dtype=np.float64)
        if arr.ndim != 3 or len(arr) == 0:
            raise DataError(f"expected a non-empty (N, T, D) array of chunks, got {arr.shape}", "actions", "shape")
        q01, q99 = quantile_bounds(stats, arr.shape[2])
        provisional = FastConfig(arr.shape[1], arr.shape[2], scale, vocab_size, 0, 0, q01.tolist(), q99.tolist())
        probe = cls(provisional, Tokenizer(models.BPE()))
        ints = probe.coefficients(probe._check_chunks(arr))
        config = FastConfig(
            horizon=arr.shape[1],
            action_dim=arr.shape[2],
            scale=float(scale),
            vocab_size=int(vocab_size),
            min_token=int(ints.min()),
            max_token=int(ints.max()),
            q01=[float(v) for v in q01],
            q99=[float(v) for v in q99],
        )
        alphabet = [chr(i) for i in range(config.max_token - config.min_token + 1)]
        if len(alphabet) > vocab_size:
            raise ConfigError(
                f"vocab_size {vocab_size} is smaller than the {len(alphabet)} distinct coefficient values; "
                "raise vocab_size or lower scale"
            )
        bpe = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            initial_alphabet=alphabet,
            special_tokens=[],
            max_token_length=10_000,
            show_progress=False,
        )
        fitted = cls(config, bpe)
        bpe.train_from_iterator(fitted._strings(ints), trainer=trainer, length=len(ints))
        return fitted

    # -- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write tokenizer.json (loadable by PreTrainedTokenizerFast) and fast_config.json; atomic per file."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (
            (TOKENIZER_NAME, self.bpe.to_str()),
            (CONFIG_NAME, json.dumps(asdict(self.config), indent=2)),
        ):
            tmp = out / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(out / name)
        return out

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, revision: str | None = None) -> FastTokenizer:
        """Load from a folder written by `save_pretrained`, or a Hub id through the HF cache."""
        folder = Path(name_or_path)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(str(name_or_path), revision=revision, allow_patterns=[CONFIG_NAME, TOKENIZER_NAME])
            )
        config_path = folder / CONFIG_NAME
        if not config_path.is_file():
            raise DataError("missing (not a FAST tokenizer folder)", config_path)
        try:
            raw = json.loads(config_path.read_text())
            config = FastConfig(**raw)
        except (ValueError, TypeError, RecursionError) as exc:
            raise DataError(f"bad FAST config ({exc})", config_path) from exc
        if config.format_version != FORMAT_VERSION:
            raise DataError(f"format_version {config.format_version}, expected {FORMAT_VERSION}", config_path)
        config.check(str(config_path))
        tokenizer_path = folder / TOKENIZER_NAME
        if not tokenizer_path.is_file():
            raise DataError("missing (a FAST tokenizer folder holds its BPE here)", tokenizer_path)
        try:
            bpe = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # the tokenizers library raises a bare Exception for a malformed file
            raise DataError(f"not a tokenizers JSON file ({one_line(exc)})", tokenizer_path) from exc
        return cls(config, bpe)


def action_chunks(actions: np.ndarray, horizon: int, stride: int = 1, pad: bool = False) -> tuple[np.ndarray, int]:
    """(N, horizon, D) windows of an episode's (T, D) actions starting every `stride` steps.

    With `pad`, windows running past the end repeat the last action (count returned as the second value);
    without, only full windows are returned (an episode shorter than `horizon` gives none).
    """
    arr = np.asarray(actions)
    length = len(arr)
    starts = range(0, length if pad else max(0, length - horizon + 1), stride)
    windows = []
    padded = 0
    for s in starts:
        window = arr[s : s + horizon]
        if len(window) < horizon:
            window = np.concatenate([window, np.repeat(window[-1:], horizon - len(window), axis=0)])
            padded += 1
        windows.append(window)
    if not windows:
        return np.zeros((0, horizon, arr.shape[1] if arr.ndim == 2 else 0), dtype=arr.dtype), 0
    return np.stack(windows), padded
