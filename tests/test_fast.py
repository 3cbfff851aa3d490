"""FAST tokenizer: round trip within the quantisation bound, compression, determinism, persistence, bad input."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from datasets_build.cli import main
from datasets_build.errors import ConfigError, DataError
from datasets_build.fast import FastTokenizer, FastVocabMapping, action_chunks, answer_text, parse_answer

HORIZON = 5


def smooth_chunks(n: int = 3000, horizon: int = HORIZON, seed: int = 0) -> np.ndarray:
    """Bridge-like chunks: slow sinusoidal end-effector deltas (a few mm per step) and a binary gripper."""
    rng = np.random.default_rng(seed)
    t = np.arange(horizon)[None, :, None] / 5.0  # 5 Hz
    freq = rng.uniform(0.05, 0.6, (n, 1, 7))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 7))
    amp = np.array([0.01, 0.01, 0.01, 0.05, 0.05, 0.05, 0.0])
    chunks = amp * np.sin(2 * np.pi * freq * t + phase) + rng.normal(0, 1e-4, (n, horizon, 7))
    chunks[..., 6] = (rng.uniform(size=(n, 1)) > 0.5).astype(float)
    return chunks


def stats_of(chunks: np.ndarray) -> dict:
    flat = chunks.reshape(-1, chunks.shape[-1])
    return {
        "action": {"q01": np.quantile(flat, 0.01, axis=0).tolist(), "q99": np.quantile(flat, 0.99, axis=0).tolist()}
    }


@pytest.fixture(scope="module")
def chunks():
    return smooth_chunks()


@pytest.fixture(scope="module")
def tokenizer(chunks):
    return FastTokenizer.fit(chunks, stats_of(chunks), vocab_size=1024, scale=10)


@pytest.mark.parametrize("scale", [5, 10, 20])
def test_round_trip_error_is_bounded_by_the_quantisation_step(chunks, scale, capsys):
    tok = FastTokenizer.fit(chunks, stats_of(chunks), vocab_size=1024, scale=scale)
    ids = tok.encode_batch(chunks)
    decoded, valid = tok.decode_batch(ids)
    assert valid.all()
    # in normalised units each coefficient is off by <= 0.5/scale; the orthonormal inverse DCT keeps the
    # per-dimension L2 error over time, so no single value is off by more than sqrt(T) * 0.5 / scale
    normed_err = np.abs(tok.normalize(decoded) - tok.normalize(chunks))
    bound = math.sqrt(HORIZON) * 0.5 / scale
    assert normed_err.max() <= bound + 1e-9
    tokens = np.mean([len(i) for i in ids])
    with capsys.disabled():
        print(
            f"\nFAST scale {scale}: max |err| {normed_err.max():.4f} (normalised, bound {bound:.4f}), "
            f"{tokens:.1f} tokens per {HORIZON}x7 chunk"
        )


def test_smooth_chunks_compress(chunks, tokenizer):
    lengths = [len(i) for i in tokenizer.encode_batch(chunks)]
    assert np.mean(lengths) < 0.6 * HORIZON * 7
    assert tokenizer.vocab_size <= 1024


def test_fit_is_deterministic(chunks, tokenizer, tmp_path):
    again = FastTokenizer.fit(chunks, stats_of(chunks), vocab_size=1024, scale=10)
    assert again.bpe.to_str() == tokenizer.bpe.to_str()
    assert again.encode_batch(chunks[:50]) == tokenizer.encode_batch(chunks[:50])


def test_batch_equals_single(chunks, tokenizer):
    ids = tokenizer.encode_batch(chunks[:20])
    assert ids == [tokenizer.encode(c) for c in chunks[:20]]
    decoded, _ = tokenizer.decode_batch(ids)
    assert np.array_equal(decoded[3], tokenizer.decode(ids[3]).actions)


def test_invalid_sequences_decode_flagged_not_raised(chunks, tokenizer):
    ids = tokenizer.encode(chunks[0])
    for bad in ([], ids[:-1] if len(ids) > 1 else [], ids + ids, [tokenizer.vocab_size + 5], [-1]):
        out = tokenizer.decode(bad)
        assert not out.valid
        assert out.reason
        assert out.actions.shape == (HORIZON, 7)
        assert not out.actions.any()
    _decoded, valid = tokenizer.decode_batch([ids, [], ids])
    assert valid.tolist() == [True, False, True]


def test_out_of_range_coefficients_are_clipped_and_counted(chunks, tokenizer):
    wild = chunks[:10].copy()
    wild[:, :, 0] = np.linspace(-5, 5, HORIZON)  # far outside q01/q99: normalisation clips to [-1, 1]
    assert tokenizer.decode(tokenizer.encode(wild[0])).valid
    assert tokenizer.clipped_fraction(chunks) == 0.0  # the fit data spans [min_token, max_token] by construction
    # a tokenizer fit on gentle motions only: full-range chunks give coefficients past its alphabet
    calm = chunks * 0.1
    narrow = FastTokenizer.fit(calm, stats_of(chunks), vocab_size=1024, scale=10)
    assert narrow.clipped_fraction(calm) == 0.0
    assert narrow.clipped_fraction(chunks) > 0.0
    assert narrow.decode(narrow.encode(chunks[0])).valid  # clipped, still a well-formed sequence


def test_bad_chunks_raise_one_line_errors(tokenizer):
    with pytest.raises(DataError, match="shape"):
        tokenizer.encode_batch(np.zeros((2, HORIZON, 6)))
    nan = np.zeros((1, HORIZON, 7))
    nan[0, 1, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        tokenizer.encode_batch(nan)
    with pytest.raises(DataError, match="statistics"):
        FastTokenizer.fit(np.zeros((4, HORIZON, 7)), {"action": {"q01": [0.0] * 6, "q99": [1.0] * 6}})


def test_save_and_load_including_plain_transformers(chunks, tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "fast")
    loaded = FastTokenizer.from_pretrained(tmp_path / "fast")
    assert loaded.config == tokenizer.config
    assert loaded.encode_batch(chunks[:30]) == tokenizer.encode_batch(chunks[:30])
    plain = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "fast" / "tokenizer.json"))
    text = tokenizer._strings(tokenizer.coefficients(chunks[:1]))[0]
    assert plain(text, add_special_tokens=False).input_ids == tokenizer.encode(chunks[0])
    (tmp_path / "fast" / "fast_config.json").write_text("{not json")
    with pytest.raises(DataError, match=r"fast_config\.json"):
        FastTokenizer.from_pretrained(tmp_path / "fast")


def test_load_by_hub_id_from_the_local_cache(chunks, tokenizer, tmp_path, monkeypatch):
    import os

    from huggingface_hub import constants

    repo = "vlm4vla-test/fast-bridge"
    snapshot = os.path.join(constants.HF_HUB_CACHE, "models--vlm4vla-test--fast-bridge", "snapshots", "a" * 40)
    tokenizer.save_pretrained(snapshot)
    refs = os.path.join(constants.HF_HUB_CACHE, "models--vlm4vla-test--fast-bridge", "refs")
    os.makedirs(refs, exist_ok=True)
    with open(os.path.join(refs, "main"), "w") as f:
        f.write("a" * 40)
    assert FastTokenizer.from_pretrained(repo).encode(chunks[0]) == tokenizer.encode(chunks[0])


def test_action_chunks_windows_and_padding():
    actions = np.arange(14, dtype=float).reshape(7, 2)
    full, padded = action_chunks(actions, 3)
    assert full.shape == (5, 3, 2)
    assert padded == 0
    assert np.array_equal(full[4], actions[4:7])
    with_pad, padded = action_chunks(actions, 3, stride=2, pad=True)
    assert with_pad.shape == (4, 3, 2)
    assert padded == 1
    assert np.array_equal(with_pad[3], actions[[6, 6, 6]])
    assert action_chunks(actions[:2], 3)[0].shape == (0, 3, 2)


def test_vocab_mappings(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    vlm = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    mapping = FastVocabMapping.for_tokenizer(vlm, 16, "new_tokens")
    assert mapping.to_vlm([0, 15]) == [3, 18]
    assert vlm.convert_ids_to_tokens(mapping.to_vlm([7])) == ["<fast_7>"]
    assert mapping.from_vlm([1, 3, 18, 40]) == [0, 15]
    encoded = vlm(answer_text([4, 2, 9]), add_special_tokens=False).input_ids
    assert mapping.from_vlm(encoded) == [4, 2, 9]
    tail = FastVocabMapping("vocab_tail", 1024, 257152)
    assert tail.to_vlm([0, 1]) == [257152 - 1 - 128, 257152 - 1 - 128 - 1]
    assert tail.from_vlm(tail.to_vlm([0, 5, 1023])) == [0, 5, 1023]
    with pytest.raises(ConfigError):
        FastVocabMapping("vocab_tail", 1024, 500)
    with pytest.raises(ConfigError):
        FastVocabMapping("bytes", 16, 100)
    assert parse_answer("Action: <fast_3><fast_12> done") == [3, 12]


# Real Qwen2.5-VL: ordinary vocabulary 151643, added/special ids 151643..151664, 151936 embedding rows.
QWEN_BASE, QWEN_LEN, QWEN_ROWS = 151643, 151665, 151936


def test_vocab_tail_counts_from_the_tokenizer_on_the_real_qwen_layout():
    reserved = {i: f"<added {i}>" for i in range(QWEN_BASE, QWEN_LEN)}
    tail = FastVocabMapping("vocab_tail", 1024, QWEN_BASE)
    tail.check_ids(reserved, QWEN_ROWS)
    ids = tail.to_vlm(range(1024))
    assert max(ids) == QWEN_BASE - 1 - 128
    assert min(ids) == QWEN_BASE - 128 - 1024
    assert not set(ids) & set(reserved)
    assert tail.from_vlm(ids) == list(range(1024))
    assert tail.from_vlm([QWEN_BASE + 2]) == []  # a generated <|im_end|> is not a FAST token
    # Counting from the embedding rows (the old mapping) puts FAST ids 143..164 onto the special tokens.
    rows_based = FastVocabMapping("vocab_tail", 1024, QWEN_ROWS)
    hit = [t for t, i in enumerate(rows_based.to_vlm(range(1024))) if i in reserved]
    assert hit == list(range(143, 165))
    with pytest.raises(ConfigError, match="FAST id 143 onto the added/special token '<added 151664>'"):
        rows_based.check_ids(reserved, QWEN_ROWS)
    with pytest.raises(ConfigError, match="embedding matrix has 151000 rows"):
        tail.check_ids({}, 151000)


QWEN_IDS = [
    "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen3-VL-4B-Instruct",
    "Qwen/Qwen3-VL-8B-Instruct",
    "Qwen/Qwen3-VL-30B-A3B-Instruct",
]


@pytest.fixture(scope="module")
def qwen_layouts():
    from datasets_build.tiny_models import install_tiny_backbones

    return install_tiny_backbones(ids=QWEN_IDS)


@pytest.mark.parametrize("repo_id", QWEN_IDS)
def test_vocab_tail_never_touches_an_added_id_on_the_padded_tiny_layouts(qwen_layouts, repo_id):
    from transformers import AutoConfig, AutoTokenizer

    from datasets_build.fast.vocab import reserved_ids

    tokenizer = AutoTokenizer.from_pretrained(repo_id)
    rows = AutoConfig.from_pretrained(repo_id).get_text_config().vocab_size
    assert rows > len(tokenizer)  # padded past the tokenizer, as the release is
    mapping = FastVocabMapping.for_tokenizer(tokenizer, 1024, "vocab_tail", embedding_rows=rows)
    ids = mapping.to_vlm(range(1024))
    reserved = reserved_ids(tokenizer)
    assert "<|im_end|>" in reserved.values()
    assert "<|image_pad|>" in reserved.values()
    assert not set(ids) & set(reserved)
    assert max(ids) < tokenizer.vocab_size - 128
    assert mapping.from_vlm(ids) == list(range(1024))  # every FAST id round-trips
    assert mapping.from_vlm(tokenizer.encode("<|im_end|><|endoftext|>")) == []
    with pytest.raises(ConfigError, match="added/special token"):
        FastVocabMapping("vocab_tail", 1024, rows).check_ids(reserved, rows)  # counting from the rows
    with pytest.raises(ConfigError, match="ordinary vocabulary of at least 4225 ids"):
        FastVocabMapping.for_tokenizer(tokenizer, 4096, "vocab_tail", embedding_rows=rows)


def test_fit_fast_cli(demo_dir, tmp_path, capsys):
    out = tmp_path / "fast"
    assert main(["fit-fast", "demo", str(demo_dir), "--horizon", "4", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["invalid_decodes"] == 0
    assert summary["chunks"] > 0
    assert summary["tokens_per_chunk_mean"] < summary["values_per_chunk"]
    assert FastTokenizer.from_pretrained(out).config.horizon == 4
    assert main(["fit-fast", "demo", str(demo_dir), "--horizon", "4", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (
        main(["fit-fast", "demo", str(demo_dir), "--horizon", "4", "--out", str(tmp_path / "x"), "--vocab-size", "8"])
        == 2
    )
    assert "vocab_size" in capsys.readouterr().err


# -- the fast_tokens corpus --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_tokenizer(demo_dir, tmp_path_factory):
    from datasets_build.fast.fit import FitFastConfig, fit_fast

    out = tmp_path_factory.mktemp("fast") / "tok"
    fit_fast(FitFastConfig(source="demo", input=str(demo_dir), out=str(out), horizon=4))
    return out


def test_fast_tokens_corpus_answers_decode_to_the_next_actions(demo_dir, demo_episodes, demo_tokenizer, tmp_path):
    from datasets_build.corpora import verify_corpus
    from datasets_build.shards import ShardSet

    out = tmp_path / "ft"
    args = ["build", "fast_tokens", "--source", "demo", "--input", str(demo_dir), "--out", str(out)]
    assert main([*args, f"tokenizer={demo_tokenizer}", "stride=2"]) == 0
    tok = FastTokenizer.from_pretrained(demo_tokenizer)
    by_id = {ep.episode_id: ep for ep in demo_episodes}
    shard_set = ShardSet(out)
    samples = list(shard_set)
    assert samples
    for sample in samples:
        ep = by_id[sample.meta["episode_id"]]
        step = sample.meta["frame"]
        assert step % 2 == 0
        assert step + 4 <= len(ep)
        ids = parse_answer(sample.messages[1]["content"][0]["text"])
        decoded = tok.decode(ids)
        assert decoded.valid
        err = np.abs(tok.normalize(decoded.actions) - tok.normalize(ep.actions[step : step + 4]))
        assert err.max() <= math.sqrt(4) * 0.5 / tok.config.scale + 1e-6
        assert ep.instruction.rstrip(".") in sample.messages[0]["content"][-1]["text"]
    card = shard_set.card
    assert any(i.get("role") == "fast_tokenizer" for i in card.inputs)
    assert card.skipped.get("short_chunk", 0) > 0
    assert verify_corpus(out)["errors"] == 0


def test_fast_tokens_verify_rejects_tampering_and_pad_end(demo_episodes, demo_tokenizer):
    from datasets_build.corpora import EpisodeContext, episode_rng, make_builder
    from datasets_build.sample import assistant_turn

    builder = make_builder("fast_tokens", {"tokenizer": str(demo_tokenizer), "pad_end": True})
    ep = demo_episodes[0]
    result = builder.build(ep, EpisodeContext(episode_rng(0, ep.episode_id)))
    assert len(result.samples) == len(ep)
    assert result.samples[-1].meta["padded_steps"] == 3
    sample = result.samples[0]
    assert builder.verify(sample)
    ids = parse_answer(sample.messages[1]["content"][0]["text"])
    tampered = replace(sample, messages=[sample.messages[0], assistant_turn(answer_text(ids[:-1]))])
    assert not builder.verify(tampered)
    with pytest.raises(ConfigError, match="tokenizer"):
        make_builder("fast_tokens", {})
