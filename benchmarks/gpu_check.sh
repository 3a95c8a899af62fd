#!/usr/bin/env bash
# Exercise every CUDA path of featstore once and print a table (docs/scale-out.md):
#   1. extract on cuda                      4. pretrain on cuda, killed and resumed
#   2. identical features on a rerun        5. tune (nmtune) on cuda features
#   3. extract --ray with num_gpus=1 actors (a one-node Ray cluster on 127.0.0.1)
# Run it from the repository root whenever a machine with an NVIDIA GPU is at hand:
#   benchmarks/gpu_check.sh [WORKDIR]
# Exits 2 with a clear message when torch sees no CUDA device. Nothing leaves 127.0.0.1.
set -uo pipefail

PY=${PYTHON:-.venv/bin/python}
FS=${FEATSTORE:-$(dirname "$PY")/featstore}
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 HF_HUB_OFFLINE=1

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: torch sees no CUDA device here (torch.cuda.is_available() is False)." >&2
  echo "gpu_check: run it on a machine with an NVIDIA GPU and a CUDA build of torch." >&2
  exit 2
fi
W=${1:-$(mktemp -d -t featstore-gpu-check-XXXXXX)}
mkdir -p "$W"
GPU=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
echo "gpu_check: $GPU; work folder $W"

ROWS=()
row() { ROWS+=("$(printf '%-34s %-5s %8s  %s' "$1" "$2" "$3" "$4")"); }
now() { date +%s.%N; }
since() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# Data: 512 labelled 32x32 images, as an .npz (train and test: the whole file each).
"$PY" - "$W/data.npz" <<'EOF'
import sys
import numpy as np
rng = np.random.default_rng(0)
y = np.arange(512) % 4
x = np.clip(rng.integers(0, 255, (4, 32, 32))[y] + rng.integers(-40, 40, (512, 32, 32)), 0, 255)
np.savez(sys.argv[1], x=x.astype(np.uint8), y=y.astype(np.int64))
EOF
EXTRACT=(extract --backbone timm:efficientnet_lite0 --random-weights --image-size 96
         --dataset "$W/data.npz" --split train --split test --chunk-rows 128 --batch-size 64
         --no-progress --json)

# Compare two roots' sets: every file but the group zarr.json (provenance) byte for byte.
same_sets() {
  "$PY" - "$1" "$2" <<'EOF'
import sys
from pathlib import Path
def files(root):
    out = {}
    for s in sorted(Path(root).glob("*.zarr")):
        for f in sorted(s.rglob("*")):
            if f.is_file() and f.relative_to(s) != Path("zarr.json"):
                out[f"{s.name}/{f.relative_to(s)}"] = f.read_bytes()
    return out
a, b = files(sys.argv[1]), files(sys.argv[2])
bad = sorted(k for k in a if a.get(k) != b.get(k)) + sorted(set(b) - set(a))
print("identical" if a and not bad else f"{len(bad)} of {len(a)} files differ, e.g. {bad[:2]}")
sys.exit(0 if a and not bad else 1)
EOF
}

# 1. extract on cuda
t=$(now)
if "$FS" "${EXTRACT[@]}" --root "$W/cuda1" --device cuda > "$W/cuda1.json" 2> "$W/cuda1.err"; then
  dev=$("$PY" -c "import json,sys,glob; print({json.load(open(p))['attributes']['featstore']['extraction']['device'] for p in glob.glob(sys.argv[1] + '/*.zarr/zarr.json')})" "$W/cuda1")
  row "extract --device cuda" PASS "$(since "$t")" "devices recorded: $dev"
else
  row "extract --device cuda" FAIL "$(since "$t")" "$(tail -c 200 "$W/cuda1.err")"
fi

# 2. identical features on a rerun (a second root, same options)
t=$(now)
"$FS" "${EXTRACT[@]}" --root "$W/cuda2" --device cuda > /dev/null 2> "$W/cuda2.err"
if note=$(same_sets "$W/cuda1" "$W/cuda2"); then
  row "rerun on cuda: same bytes" PASS "$(since "$t")" "$note"
else
  row "rerun on cuda: same bytes" FAIL "$(since "$t")" "$note (cuDNN/cuBLAS nondeterminism?)"
fi

# 3. --ray with num_gpus=1 actors, against one process on cuda with --threads 1
t=$(now)
"$PY" - "$W" "$FS" "${EXTRACT[@]}" > "$W/ray.out" 2>&1 <<'EOF'
import subprocess, sys
import ray
from ray.cluster_utils import Cluster
work, fs, args = sys.argv[1], sys.argv[2], sys.argv[3:]
import torch
gpus = torch.cuda.device_count()
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 2, "num_gpus": gpus, "node_ip_address": "127.0.0.1",
    "include_dashboard": False, "object_store_memory": 300 * 1024**2})
try:
    subprocess.run([fs, *args, "--root", f"{work}/local1", "--device", "cuda", "--threads", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([fs, *args, "--root", f"{work}/ray", "--ray", cluster.address],
                   check=True, stdout=subprocess.DEVNULL)
    import glob, json
    recs = [json.load(open(p))["attributes"]["featstore"]["extraction"]
            for p in glob.glob(f"{work}/ray/*.zarr/zarr.json")]
    print("RECORD", {(r["engine"], r["device"], r["actors"]) for r in recs})
finally:
    ray.shutdown()
    cluster.shutdown()
EOF
if [ $? -eq 0 ] && note=$(same_sets "$W/local1" "$W/ray"); then
  row "extract --ray (num_gpus=1 actors)" PASS "$(since "$t")" "$note; $(grep RECORD "$W/ray.out" | cut -c8-)"
else
  row "extract --ray (num_gpus=1 actors)" FAIL "$(since "$t")" "${note:-$(tail -c 200 "$W/ray.out")}"
fi

# 4. pretrain on cuda: killed after its first checkpoint, rerun: resumes and finishes
t=$(now)
PRE=(pretrain --model timm:test_resnet --dataset "$W/data.npz" --epochs 6 --batch-size 64
     --image-size 32 --device cuda --out "$W/pretrain")
"$FS" "${PRE[@]}" > "$W/pretrain1.log" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -f "$W/pretrain/checkpoint.safetensors" ] && break; sleep 0.2; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
if "$FS" "${PRE[@]}" --json > "$W/pretrain2.json" 2> "$W/pretrain2.err" \
   && [ -f "$W/pretrain/model.safetensors" ]; then
  row "pretrain on cuda: kill -9, resume" PASS "$(since "$t")" "$(grep -o '"resumed[^,]*' "$W/pretrain2.json" | head -1)"
else
  row "pretrain on cuda: kill -9, resume" FAIL "$(since "$t")" "$(tail -c 200 "$W/pretrain2.err")"
fi

# 5. tune on cuda (NMTune on the features of step 1)
t=$(now)
TRAIN=$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print([x['path'] for x in r if x['split']=='train'][0])" "$W/cuda1.json" 2>/dev/null)
TEST=$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print([x['path'] for x in r if x['split']=='test'][0])" "$W/cuda1.json" 2>/dev/null)
if [ -n "$TRAIN" ] && "$FS" tune --train "$TRAIN" --test "$TEST" --method nmtune --seeds 1 \
     --epochs 3 --device cuda --json > "$W/tune.json" 2> "$W/tune.err"; then
  row "tune --method nmtune --device cuda" PASS "$(since "$t")" "$(grep -o '"test_accuracy[^,]*' "$W/tune.json" | head -1)"
else
  row "tune --method nmtune --device cuda" FAIL "$(since "$t")" "$(tail -c 200 "$W/tune.err")"
fi

echo
printf '%-34s %-5s %8s  %s\n' "check ($GPU)" "" "seconds" "note"
printf '%s\n' "${ROWS[@]}"
failed=$(printf '%s\n' "${ROWS[@]}" | grep -c ' FAIL ')
echo
echo "gpu_check: $((${#ROWS[@]} - failed)) of ${#ROWS[@]} passed; files in $W"
[ "$failed" -eq 0 ]
