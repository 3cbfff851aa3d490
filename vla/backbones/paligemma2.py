"""PaliGemma 2: the PaliGemma prompt and prefix/suffix attention on a Gemma-2 LLM (hidden 2304)."""

from __future__ import annotations

from vla.backbones.paligemma import PaliGemmaBackbone


class PaliGemma2Backbone(PaliGemmaBackbone):
    """PaliGemma2-3B-pt-224; its head width is 2304 / 2 = 1152 by the Table 9 rule (printed there as 1502)."""

    family = "paligemma2"
