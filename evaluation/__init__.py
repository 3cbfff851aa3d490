"""Stage 3: closed-loop rollouts of `vla.api.PolicyLike` policies in the demo sim, CALVIN, SimplerEnv-Bridge and LIBERO.

`python -m evaluation {run, sweep, report, calvin-sequences}`; adapters in `evaluation.sims`,
the resumable runner in `evaluation.run`, protocol rules and metrics in `evaluation.protocol`.
"""
