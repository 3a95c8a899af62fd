#!/usr/bin/env bash
# Tables, plots and raw-feature spectra for docs/results/, from the sweep's results.
# Run from the folder holding results-features/ and results.jsonl.
set -euo pipefail
OUT=${OUT:-report}
featstore report results.jsonl --out "$OUT"
featstore spectrum results-features/* --json > "$OUT/raw_spectra.json"
