"""Stage 3: closed-loop rollouts of `vla.api.PolicyLike` policies in the demo sim, CALVIN, SimplerEnv-Bridge and LIBERO.

`python -m evaluation {run, sweep, report, calvin-sequences, sim-env}`; adapters in `evaluation.sims`,
the resumable runner in `evaluation.run`, protocol rules and metrics in `evaluation.protocol`; a policy
server's client in `evaluation.ws_policy`; simulators in their own environments: `evaluation.worker`
(runs there) and `evaluation.remote` (starts or reaches the workers).
"""
