"""Stage 1: post-train Qwen-VL models on auxiliary-corpus shards with TRL's SFTTrainer.

`config` (SFTTrainConfig), `data` (shards -> streaming rows), `model` (Auto classes, chat template check),
`freezing` (groups, LoRA presets, FAST rows, the parameter table), `action_tokens` (FAST new_tokens /
vocab_tail), `collator` (assistant-only labels), `trainer` (SFTTrainer additions and the extra-loss seam),
`train` (the stage), `card` (checkpoint folder + model card), `evaluate`, `push`, `cli`.
"""
