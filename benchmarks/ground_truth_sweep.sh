#!/usr/bin/env bash
# The published ground-truth tables (benchmarks/results/table-quick, table-long): every
# architecture of the default space under `quick-adamw` (the default recipe before the
# recipe study) with 3 seeds, then a stratified sample of 36 under `long-adamw` with 2
# seeds; then the same under today's `quick` and `long` (table-quick-muon, table-long-muon),
# and the same 36 under `epoch` (one pass over the offline train split: `long` reads it 3.4
# times, so it ranks how much an architecture memorizes). The 30 best architectures of
# table-quick-muon (by the mean of its first 3 seeds) get 10 seeds (`--top 30
# --top-seeds 10`). Two worker processes of one thread each (the fastest layout on the
# 2-core CPU). Resumable: run it again and it continues where it stopped.
#   bash benchmarks/ground_truth_sweep.sh PATH/TO/wikitext-2-offline
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: ground_truth_sweep.sh WIKITEXT_FOLDER}"
common=(--data "$data" --backend processes --workers 2 --threads 1 --device cpu)
genesis sweep --output benchmarks/results/table-quick --recipe quick-adamw --seeds 3 "${common[@]}"
genesis sweep --output benchmarks/results/table-long --recipe long-adamw --seeds 2 --sample 36 "${common[@]}"
genesis sweep --output benchmarks/results/table-quick-muon --recipe quick --seeds 3 --top 30 --top-seeds 10 "${common[@]}"
genesis sweep --output benchmarks/results/table-long-muon --recipe long --seeds 2 --sample 36 "${common[@]}"
genesis sweep --output benchmarks/results/table-epoch-muon --recipe epoch --seeds 2 --sample 36 "${common[@]}"
