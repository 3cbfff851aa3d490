"""The omni-generation head: a diffusers denoiser conditioned on the VLM through learnable query tokens.

MetaQuery-style: `num_queries` new tokens `<gen_0>` ... are added to the VLM's vocabulary (their embedding
rows train), appended after each prompt, and their last hidden states are projected to the cross-attention
inputs of a small `UNet2DConditionModel`, trained with the DDPM noise-prediction loss on the targets of
the `omni_generation` corpus (depth maps, segmentation maps, future frames, images) jointly with the text
loss; rows without a target (general VQA in a mix) add nothing. The VLM stays loadable on its own (the
VLA stage uses only it); the head is saved beside it in `omni_head/`, and `sample` writes generated maps
as PNG through the corpus's own encoders (`datasets_build.corpora.omni_generation`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from datasets_build.corpora.omni_generation import PALETTE, encode_depth_target
from datasets_build.errors import ConfigError, DataError, one_line
from sft.config import OmniHeadConfig
from sft.trainer import ExtraLoss

HEAD_DIR = "omni_head"
CONFIG_FILE = "omni_config.json"
PROJECTOR_FILE = "projector.safetensors"
DENOISER_DIR = "denoiser"
KINDS = ("depth", "segmentation", "image")


def query_token(i: int) -> str:
    """The i-th generation query token."""
    return f"<gen_{i}>"


def add_query_tokens(tokenizer: Any, model: Any, num_queries: int) -> list[int]:
    """Add `<gen_i>` tokens (if missing), resize the embeddings, return their ids in order."""
    tokens = [query_token(i) for i in range(num_queries)]
    tokenizer.add_tokens(tokens, special_tokens=True)
    ids = [int(i) for i in tokenizer.convert_tokens_to_ids(tokens)]
    rows = model.get_input_embeddings().weight.shape[0]
    if max(ids) >= rows:
        model.resize_token_embeddings(len(tokenizer))
    return ids


# -- targets <-> denoiser images ---------------------------------------------------------------------
def target_tensor(target: Image.Image, kind: str, size: int, depth_far: float) -> torch.Tensor:
    """A corpus target image -> (3, size, size) float in [-1, 1] (depth: metres / depth_far as grey)."""
    if kind == "depth":
        if target.mode not in ("I;16", "I"):
            raise DataError(f"depth target must be a 16-bit PNG, got mode {target.mode}", "target")
        metres = np.asarray(target, dtype=np.float32) / 1000.0
        grey = np.clip(metres / depth_far, 0.0, 1.0)
        image = Image.fromarray((grey * 65535).astype(np.uint16)).resize((size, size), Image.Resampling.NEAREST)
        arr = np.asarray(image, dtype=np.float32) / 65535.0
        rgb = np.repeat(arr[..., None], 3, axis=2)
    else:
        resample = Image.Resampling.NEAREST if kind == "segmentation" else Image.Resampling.BILINEAR
        rgb = np.asarray(target.convert("RGB").resize((size, size), resample), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1) * 2.0 - 1.0


def tensor_to_png(image: torch.Tensor, kind: str, depth_far: float) -> Image.Image:
    """A generated (3, H, W) image in [-1, 1] -> the corpus's PNG form (16-bit mm depth, palette, RGB)."""
    arr = ((image.detach().float().clamp(-1, 1) + 1.0) / 2.0).permute(1, 2, 0).cpu().numpy()
    if kind == "depth":
        return encode_depth_target(arr.mean(axis=2) * depth_far, "png16_mm")
    rgb = (arr * 255.0).round().astype(np.uint8)
    if kind == "segmentation":  # snap every pixel to the nearest palette colour
        colours = np.asarray([c for _, c in PALETTE], dtype=np.int32)
        flat = rgb.reshape(-1, 3).astype(np.int32)
        nearest = np.argmin(((flat[:, None, :] - colours[None]) ** 2).sum(axis=2), axis=1)
        rgb = colours[nearest].astype(np.uint8).reshape(rgb.shape)
    return Image.fromarray(rgb)


def collate_targets(rows: list[dict[str, Any]], size: int, depth_far: float) -> dict[str, torch.Tensor]:
    """The head's batch columns: `omni_target` (B, 3, size, size) and `omni_has_target` (B,) bool."""
    targets, has = [], []
    for row in rows:
        target, kind = row.get("target"), str(row.get("generation") or "")
        if target is None or kind not in (*KINDS, "future_frame"):
            targets.append(torch.zeros(3, size, size))
            has.append(False)
            continue
        targets.append(target_tensor(target, "image" if kind == "future_frame" else kind, size, depth_far))
        has.append(True)
    return {"omni_target": torch.stack(targets), "omni_has_target": torch.tensor(has)}


# -- the head --------------------------------------------------------------------------------------------
def append_queries(inputs: dict[str, Any], query_ids: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
    """Model inputs with the query ids placed right after each row's last real token; (inputs, positions).

    Rows are re-packed right-padded; other per-token tensors (token_type_ids, mm_token_type_ids) get zeros.
    """
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    batch, n = ids.shape[0], len(query_ids)
    lengths = mask.sum(dim=1)
    width = int(lengths.max()) + n
    out_ids = ids.new_zeros(batch, width)
    out_mask = mask.new_zeros(batch, width)
    per_token = {
        k: v
        for k, v in inputs.items()
        if isinstance(v, torch.Tensor)
        and v.shape[:2] == ids.shape
        and k not in ("input_ids", "attention_mask", "labels")
    }
    out_extra = {k: v.new_zeros(batch, width, *v.shape[2:]) for k, v in per_token.items()}
    positions = torch.empty(batch, n, dtype=torch.long, device=ids.device)
    for row in range(batch):
        keep = mask[row].bool()
        length = int(lengths[row])
        out_ids[row, :length] = ids[row][keep]
        out_ids[row, length : length + n] = query_ids.to(ids.device)
        out_mask[row, : length + n] = 1
        for k, v in per_token.items():
            out_extra[k][row, :length] = v[row][keep]
        positions[row] = torch.arange(length, length + n, device=ids.device)
    new = {k: v for k, v in inputs.items() if k not in per_token and k not in ("input_ids", "attention_mask", "labels")}
    new.update(input_ids=out_ids, attention_mask=out_mask, **out_extra)
    return new, positions


class OmniGenerationHead(ExtraLoss):
    """Query tokens -> projector -> UNet2DConditionModel; DDPM loss in training, DDIM sampling after."""

    input_keys = ("omni_target", "omni_has_target")

    def __init__(self, config: OmniHeadConfig, hidden_size: int, query_ids: list[int]) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.hidden_size = hidden_size
        self.register_buffer("query_ids", torch.tensor(query_ids, dtype=torch.long), persistent=False)
        self.query_tokens = [query_token(i) for i in range(len(query_ids))]
        self.projector = nn.Sequential(
            nn.Linear(hidden_size, config.cond_dim), nn.GELU(), nn.Linear(config.cond_dim, config.cond_dim)
        )
        levels = len(config.block_out_channels)
        self.denoiser: Any = UNet2DConditionModel(
            sample_size=config.image_size,
            in_channels=3,
            out_channels=3,
            layers_per_block=config.layers_per_block,
            block_out_channels=tuple(config.block_out_channels),
            down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
            cross_attention_dim=config.cond_dim,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=min(8, *config.block_out_channels),
        )
        self.scheduler: Any = DDPMScheduler(num_train_timesteps=config.train_timesteps)

    def condition(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """(B, num_queries, cond_dim): the projected last hidden states of the query tokens."""
        query_ids = torch.as_tensor(self.query_ids)
        extended, positions = append_queries(inputs, query_ids)
        outputs = model(**extended, output_hidden_states=True, return_dict=True)
        hidden = outputs.hidden_states[-1]
        states = torch.gather(hidden, 1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        dtype = next(self.projector.parameters()).dtype
        projected: torch.Tensor = self.projector(states.to(dtype))
        return projected

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """Weighted DDPM noise-prediction loss over the rows that carry a target (0 when none do)."""
        has = inputs.pop("omni_has_target").bool()
        target = inputs.pop("omni_target")
        if not bool(has.any()):
            return sum((p.sum() * 0.0 for p in self.parameters()), torch.zeros(()))  # keeps every rank in step
        cond = self.condition(model, inputs)[has]
        clean = target[has].to(cond.dtype)
        noise = torch.randn_like(clean)
        steps = torch.randint(0, self.config.train_timesteps, (clean.shape[0],), device=clean.device)
        noisy = self.scheduler.add_noise(clean, noise, steps)
        predicted = self.denoiser(noisy, steps, encoder_hidden_states=cond).sample
        return F.mse_loss(predicted, noise) * self.config.weight

    @torch.inference_mode()
    def sample(
        self, model: nn.Module, inputs: dict[str, Any], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, 3, S, S) images in [-1, 1] generated for the prompts in `inputs` (DDIM, `sample_steps`)."""
        cond = self.condition(model, inputs)
        ddim = DDIMScheduler.from_config(self.scheduler.config)
        ddim.set_timesteps(self.config.sample_steps)
        size = self.config.image_size
        image = torch.randn((cond.shape[0], 3, size, size), generator=generator, dtype=cond.dtype).to(cond.device)
        for t in ddim.timesteps:
            noise = self.denoiser(image, t, encoder_hidden_states=cond).sample
            image = ddim.step(noise, t, image).prev_sample
        return image.clamp(-1.0, 1.0)

    # -- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, query_tokens: list[str]) -> Path:
        """Write `folder/omni_config.json`, the projector (safetensors) and the denoiser (diffusers layout)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"config": asdict(self.config), "hidden_size": self.hidden_size, "query_tokens": query_tokens}
        (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()}, str(out / PROJECTOR_FILE))
        self.denoiser.save_pretrained(out / DENOISER_DIR)
        return out

    def load_weights(self, folder: str | Path) -> None:
        """Load the projector and denoiser weights of a head saved by `save_pretrained` (e.g. to resume)."""
        root = Path(folder)
        if not (root / CONFIG_FILE).is_file():
            raise DataError("no omni-generation head here", root / CONFIG_FILE)
        self.projector.load_state_dict(_projector_weights(root))
        saved = UNet2DConditionModel.from_pretrained(root / DENOISER_DIR)
        self.denoiser.load_state_dict(saved.state_dict())

    @classmethod
    def from_pretrained(cls, folder: str | Path, tokenizer: Any) -> OmniGenerationHead:
        """Load a head saved by `save_pretrained`; the tokenizer must hold its query tokens."""
        root = Path(folder)
        path = root / CONFIG_FILE
        if not path.is_file():
            raise DataError("no omni-generation head here", path)
        meta = json.loads(path.read_text())
        config = OmniHeadConfig(**meta["config"])
        found = tokenizer.convert_tokens_to_ids(meta["query_tokens"])
        if any(i is None or i == tokenizer.unk_token_id for i in found):
            raise DataError("the checkpoint's tokenizer lacks the head's query tokens", path, "query_tokens")
        ids = [int(i) for i in found]
        head = cls(config, int(meta["hidden_size"]), ids)
        head.projector.load_state_dict(_projector_weights(root))
        head.denoiser = UNet2DConditionModel.from_pretrained(root / DENOISER_DIR)
        return head


def _projector_weights(root: Path) -> dict[str, torch.Tensor]:
    """The head's projector tensors (DataError naming the file when it is missing or unreadable)."""
    path = root / PROJECTOR_FILE
    if not path.is_file():
        raise DataError("missing: the omni-generation head's projector weights", path)
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise DataError(f"unreadable projector weights ({one_line(exc)})", path) from exc


def sample_to_png(
    checkpoint: str | Path, image: str | Path, prompt: str, kind: str, out: str | Path, seed: int = 0
) -> Path:
    """Generate a map (depth / segmentation / image) for one image and prompt with a saved checkpoint's head."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if kind not in (*KINDS, "future_frame"):
        raise ConfigError(f"kind: must be one of {', '.join((*KINDS, 'future_frame'))}, got {kind!r}")
    root = Path(checkpoint)
    processor = AutoProcessor.from_pretrained(root, trust_remote_code=False)
    model = AutoModelForImageTextToText.from_pretrained(root, trust_remote_code=False).eval()
    head = OmniGenerationHead.from_pretrained(root / HEAD_DIR, processor.tokenizer).eval()
    try:
        picture = Image.open(image).convert("RGB")
    except OSError as exc:
        raise DataError(f"cannot read image ({exc})", image) from exc
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = dict(processor(text=[text], images=[[picture]], return_tensors="pt"))
    generated = head.sample(model, inputs, torch.Generator().manual_seed(seed))[0]
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor_to_png(generated, "image" if kind == "future_frame" else kind, head.config.depth_far).save(path)
    return path
