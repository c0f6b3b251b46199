#!/usr/bin/env bash
# RRKD's MNIST tables (1, 2 and 5) on the official MNIST files, 3 seeds each, then their reproduction
# record, results/reproductions/rrkd_mnist.md, written from the runs in the store (never by hand).
#   scripts/reproduce_rrkd_mnist.sh [DATA_ROOT]     DATA_ROOT holds MNIST/raw/ (default: ../shared/data)
# Run it from a checkout with kd-sweep installed; the runs go to the default store, ./mlflow.db.
# A sweep already finished in the store is not trained again, so a second call only rewrites the record.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-../shared/data}
sweeps=(rrkd_tables12_mnist_ssl rrkd_tables12_mnist_supervised rrkd_table5_anchors)
for s in "${sweeps[@]}"; do
  kd-sweep run "sweeps/$s.yaml" --set dataset.root="$root"
done
mkdir -p results/reproductions
kd-sweep record "${sweeps[@]}" --out results/reproductions/rrkd_mnist.md
