"""`fast_tokens`: image + instruction -> the FAST tokens of the next `horizon` actions (Sec. 4.4, Table 4).

The paper injects control knowledge into the VLM by fine-tuning it to predict FAST action tokens for
BridgeV2 frames. Each sample is one frame of the chosen camera (the source's first camera by default:
`image_0` for Bridge), a question naming the instruction, and the answer in the canonical text form
`<fast_12><fast_5>...` (`datasets_build.fast.vocab`); the SFT stage maps it to the VLM's ids (added tokens
or the vocabulary tail). The horizon is the tokenizer's: fit it with `fit-fast --horizon 4` for Bridge,
where 4 steps at 5 Hz (0.8 s) is the chunk the VLA head predicts on Bridge (paper-notes, A.2), so the
injected knowledge covers exactly the window the policy later acts over.

Frames whose chunk would run past the episode end are skipped and counted (`short_chunk`), or with
`pad_end=true` padded with the last action and marked `meta["padded_steps"]`. The card fingerprints the
tokenizer folder, so SFT and evaluation can check they use the same one. `verify` re-encodes the recorded
actions and requires the same ids, and checks the decoded answer is within the quantisation bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.corpora.base import (
    CorpusBuilder,
    EpisodeContext,
    EpisodeResult,
    frame_image,
    message_text,
    register_corpus,
    sample_key,
)
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError, DataError
from datasets_build.fast import FastTokenizer, answer_text, parse_answer
from datasets_build.sample import Sample, assistant_turn, user_turn
from datasets_build.shards.card import fingerprint_path

TEMPLATES = [
    "What action should the robot take to {instruction}?",
    "The robot is asked to {instruction}. Which action tokens come next?",
    "Predict the robot's next actions for the task: {instruction}.",
    "Task: {instruction}. Output the upcoming action chunk as FAST tokens.",
]


@dataclass
class FastTokensConfig:
    """Options of the fast_tokens corpus (key=value on the command line)."""

    tokenizer: str = ""  # FAST tokenizer folder or Hub id (from `fit-fast`); required
    camera: str = ""  # "" = the episode's first camera
    stride: int = 1  # a sample every `stride` steps
    pad_end: bool = False  # pad chunks past the episode end with the last action instead of skipping
    template: int = -1  # -1 = a random wording per sample, else that template index


def _instruction_at(episode: Episode, step: int) -> str:
    for window in episode.language:
        if window.start <= step < window.end and window.instruction:
            return window.instruction
    return episode.instruction


@register_corpus("fast_tokens")
class FastTokensBuilder(CorpusBuilder):
    """FAST-token answers for every `stride`-th frame of every episode."""

    config_cls = FastTokensConfig

    def __init__(self, config: FastTokensConfig, image_size: int = 224) -> None:
        super().__init__(config, image_size)
        if not config.tokenizer:
            raise ConfigError("corpus fast_tokens options: tokenizer=FOLDER_OR_HUB_ID is required (see fit-fast)")
        if config.stride < 1:
            raise ConfigError("corpus fast_tokens options: stride must be >= 1")
        if not -1 <= config.template < len(TEMPLATES):
            raise ConfigError(f"corpus fast_tokens options: template must be -1..{len(TEMPLATES) - 1}")
        self.tokenizer = FastTokenizer.from_pretrained(config.tokenizer)
        tc = self.tokenizer.config
        # in normalised units a decoded value is off by at most sqrt(T) * 0.5 / scale (orthonormal inverse DCT)
        self.tolerance = math.sqrt(tc.horizon) * 0.5 / tc.scale + 1e-6

    def card_inputs(self) -> list[dict[str, Any]]:
        """The tokenizer folder's fingerprint (a Hub id is resolved to its cached snapshot)."""
        path = Path(self.config.tokenizer)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(self.config.tokenizer))
        return [{"role": "fast_tokenizer", "name": self.config.tokenizer, **fingerprint_path(path)}]

    def build(self, episode: Episode, context: EpisodeContext) -> EpisodeResult:
        """One sample per `stride` steps with a full (or padded) chunk and an instruction."""
        cfg = self.config
        tc = self.tokenizer.config
        result = EpisodeResult()
        camera = cfg.camera or (episode.cameras[0] if episode.cameras else "")
        if camera not in episode.frames:
            result.skipped.append("no_camera")
            return result
        actions = episode.actions
        if actions.shape[1] != tc.action_dim:
            raise DataError(
                f"the tokenizer encodes {tc.action_dim}-D actions, episode {episode.episode_id} has "
                f"{actions.shape[1]}-D",
                f"{cfg.tokenizer}/fast_config.json",
                "action_dim",
            )
        steps = []
        for step in range(0, len(episode), cfg.stride):
            if step + tc.horizon > len(episode) and not cfg.pad_end:
                result.skipped.append("short_chunk")
                continue
            if not _instruction_at(episode, step):
                result.skipped.append("no_instruction")
                continue
            steps.append(step)
        if not steps:
            return result
        chunks = []
        padded = []
        for step in steps:
            chunk = actions[step : step + tc.horizon]
            padded.append(tc.horizon - len(chunk))
            if len(chunk) < tc.horizon:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], tc.horizon - len(chunk), axis=0)])
            chunks.append(chunk)
        ids = self.tokenizer.encode_batch(np.stack(chunks))
        rng = context.rng
        for step, chunk, tokens, pad in zip(steps, chunks, ids, padded, strict=True):
            template = int(rng.integers(len(TEMPLATES))) if cfg.template < 0 else cfg.template
            instruction = _instruction_at(episode, step).strip().rstrip(".")
            question = TEMPLATES[template].format(instruction=instruction)
            meta = {
                "corpus": self.name,
                "question_type": "next_actions",
                "template": f"next_actions/{template}",
                "episode_id": episode.episode_id,
                "frame": step,
                "camera": camera,
                "instruction": instruction,
                "horizon": tc.horizon,
                "padded_steps": pad,
                "actions": np.asarray(chunk, dtype=np.float32).astype(np.float64).tolist(),  # exact values
                "fast_ids": list(tokens),
            }
            result.samples.append(
                Sample(
                    key=sample_key(self.name, episode, len(result.samples)),
                    messages=[user_turn(question), assistant_turn(answer_text(tokens))],
                    images=[frame_image(episode.frames[camera][step], self.image_size)],
                    task=f"{self.name}/next_actions",
                    source=episode.source,
                    meta=meta,
                )
            )
        return result

    def verify(self, sample: Sample) -> bool:
        """The answer's ids equal the recorded actions' encoding and decode within the quantisation bound."""
        try:
            ids = parse_answer(message_text(sample, "assistant"))
            actions = np.asarray(sample.meta["actions"], dtype=np.float64)
            if ids != self.tokenizer.encode(actions) or ids != sample.meta["fast_ids"]:
                return False
            decoded = self.tokenizer.decode(ids)
            error = np.abs(self.tokenizer.normalize(decoded.actions) - self.tokenizer.normalize(actions))
            return decoded.valid and float(error.max()) <= self.tolerance
        except (KeyError, TypeError, ValueError):
            return False
