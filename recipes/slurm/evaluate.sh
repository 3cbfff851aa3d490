#!/usr/bin/env bash
# Submit an evaluation as a SLURM job array of N shards and the merge that joins them when all succeeded.
#   bash recipes/slurm/evaluate.sh 10 calvin runs/vla/calvin_abc_d/Qwen/Qwen2.5-VL-3B-Instruct/base/checkpoint-030000 runs/eval/calvin-30k --chunk-mode half
set -euo pipefail
shards="${1:?usage: evaluate.sh SHARDS SIM POLICY OUT [--chunk-mode MODE] [key=value ...]}"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${3:?usage: evaluate.sh SHARDS SIM POLICY OUT [--chunk-mode MODE] [key=value ...]}"
array="$(sbatch --parsable --array=0-$((shards - 1)) "$here/evaluate_array.sbatch" "$@")"
merge="$(sbatch --parsable --dependency=afterok:"${array%%;*}" "$here/merge_eval.sbatch" "$out")"
echo "evaluation: job array $array ($shards shards); merge: job $merge -> $out"
