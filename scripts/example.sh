#!/usr/bin/env bash
# The main job for now: the seed's smoothed target row, then the loss and gradient of a small shipped example
# (examples/data: 8 rows of 6-class logits, the first the seed's own row, and their labels).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p lsmooth
bin=target/release/lsmooth
out=${OUT:-target/example}
mkdir -p "$out"

echo '$ lsmooth targets --classes 6 --smoothing 0.1'
$bin targets --classes 6 --smoothing 0.1

echo
echo '$ lsmooth loss --logits examples/data/logits.npy --targets examples/data/labels.npy --smoothing 0.1 \'
echo "      --grad-out $out/grad.npy --loss-out $out/loss.npy"
$bin loss --logits examples/data/logits.npy --targets examples/data/labels.npy --smoothing 0.1 \
  --grad-out "$out/grad.npy" --loss-out "$out/loss.npy"

echo
echo '$ lsmooth loss ... --adaptive 0.2 --reduction mean-nonzero   # fast-reid, eps < 0'
$bin loss --logits examples/data/logits.npy --targets examples/data/labels.npy --adaptive 0.2 --reduction mean-nonzero

echo
echo '$ lsmooth loss ... --smoothing 0.1 --spread uniform --reduction none   # PyTorch label_smoothing=0.1, per row'
$bin loss --logits examples/data/logits.npy --targets examples/data/labels.npy --smoothing 0.1 --spread uniform \
  --reduction none
