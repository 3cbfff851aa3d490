"""Qwen2.5-VL: chat-format prompt (Scheme 1, default) or the short prompt (Scheme 2), paper A.2.3."""

from __future__ import annotations

from typing import Any

from vla.action_query import ACTION_QUERY_TOKEN
from vla.backbones.base import Backbone

SYSTEM_PROMPT = "You are a helpful assistant."
QUESTION = "What action should the robotic arm take to {instruction}"


class QwenBackbone(Backbone):
    """Shared by every Qwen-VL generation: the prompt schemes differ only in the processor's chat template.

    Scheme 1: `<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<|vision_start|>
    <img>...<|vision_end|>What action should the robotic arm take to {instruction}<|im_end|>\\n<|im_start|>assistant
    \\n<ActionQuery>`; Scheme 2: `<|im_start|><|vision_start|><img>...<|vision_end|>{instruction}\\n<ActionQuery>`.
    """

    def prompt(self, instruction: str) -> str:
        """The Qwen prompt for `instruction` (the processor expands the image placeholder)."""
        image = getattr(self.processor, "image_token", "<|image_pad|>")
        if self.options.prompt_scheme == "short":
            return f"<|im_start|><|vision_start|>{image}<|vision_end|>{instruction}\n{ACTION_QUERY_TOKEN}"
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": QUESTION.format(instruction=instruction)}],
            },
        ]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"{text}{ACTION_QUERY_TOKEN}"


class Qwen2_5_VLBackbone(QwenBackbone):
    """Qwen2.5-VL (3B, 7B, and fine-tunes such as RoboBrain2.0): 14 px patches, 2x2 merge, 64 tokens at 224."""

    family = "qwen2_5_vl"
