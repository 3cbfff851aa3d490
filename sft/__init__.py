"""Stage 1: post-train Qwen-VL models on auxiliary-corpus shards with TRL (lands with the SFT issue)."""
