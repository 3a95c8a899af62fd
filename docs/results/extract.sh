#!/usr/bin/env bash
# Extract every feature set the results page uses (cached: a rerun only computes what is new).
set -euo pipefail
ROOT=${ROOT:-results-features}
# EfficientNet-Lite0 (ImageNet weights, offline package) at 112 px, as the demo.
featstore extract --backbone efficientnet-lite0 --image-size 112 --root "$ROOT" \
    --dataset mnist-5k --dataset uci-digits --split train --split test --no-progress
featstore extract --backbone efficientnet-lite0 --image-size 112 --root "$ROOT" \
    --dataset fashion-mnist --split train --split test --limit 5000 --no-progress
# all-MiniLM-L6-v2: Rotten Tomatoes (train/test) and the four VADER domains (all of each).
featstore extract --backbone all-minilm-l6-v2 --root "$ROOT" \
    --dataset rotten-tomatoes --split train --split test --no-progress
featstore extract --backbone all-minilm-l6-v2 --root "$ROOT" --dataset vader-tweets \
    --dataset vader-movies --dataset vader-amazon --dataset vader-nyt --split all --no-progress
