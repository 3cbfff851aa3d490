#!/usr/bin/env bash
# Submit a corpus build as a SLURM job array of N parts and the merge that joins them when all succeeded.
#   bash recipes/slurm/build_corpus.sh 16 bridgevqa rlds /data/bridge_dataset/1.0.0 runs/corpora/bridgevqa/bridge camera=image_0
set -euo pipefail
parts="${1:?usage: build_corpus.sh PARTS CORPUS SOURCE INPUT OUT [key=value ...]}"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${4:?usage: build_corpus.sh PARTS CORPUS SOURCE INPUT OUT [key=value ...]}"
array="$(sbatch --parsable --array=0-$((parts - 1)) "$here/build_corpus_array.sbatch" "$@")"
merge="$(sbatch --parsable --dependency=afterok:"${array%%;*}" "$here/merge_corpus.sbatch" "$out")"
echo "build: job array $array ($parts parts); merge: job $merge -> $out"
