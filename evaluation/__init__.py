"""Stage 3: closed-loop rollouts in the demo sim, CALVIN, SimplerEnv-Bridge and LIBERO (lands with its issue)."""
