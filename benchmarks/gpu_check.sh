#!/usr/bin/env bash
# The GPU path in one run on one CUDA GPU (about 6 minutes; each step is capped so the whole stays under 8):
#   1. the tests marked `gpu` (bf16 autocast, fused SDPA kernels, single-rank training with an
#      interrupt and an exact resume, pinned-memory loading with workers),
#   2. `icezoo bench model` at bf16 for default, BASELINE_HF_V7, INIT5_HB and DynEdge (BASELINE_graph_V0),
#   3. a 2-minute bf16 training of the default pipeline on the cached simulated set, then its score.
# Every figure goes to one file (default gpu_check.txt; the first argument overrides it), which
# also names the GPU, torch, CUDA and the commit. Run from the repository root in an environment
# where icezoo's dependencies are installed:  bash benchmarks/gpu_check.sh [OUT]
set -uo pipefail
out="${1:-gpu_check.txt}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export ICEZOO_CACHE="${ICEZOO_CACHE:-$(mktemp -d)/cache}"
runs="$(mktemp -d)/runs"
icezoo() { python -m icezoo.cli.main "$@"; }
step() { echo; echo "## $*"; echo "\$ $*"; }

python - <<'PY' || { echo "no CUDA GPU here: nothing to check" >&2; exit 2; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
PY

{
  echo "# icezoo GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  python -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}; {torch.get_num_threads()} CPU threads')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

  step python -m pytest -m gpu -q tests
  timeout 150 python -m pytest -m gpu -q tests 2>&1 | tail -n 15

  # batch sizes that fill a large GPU (the CPU figures use 16-64)
  for spec in "default 1024" "BASELINE_HF_V7 1024" "INIT5_HB 256" "BASELINE_graph_V0 1024"; do
    set -- $spec
    step icezoo bench model --pipeline "$1" --device cuda --precision bf16 --batch-size "$2" --steps 20 --warmup 5
    timeout 45 python -m icezoo.cli.main bench model --pipeline "$1" --device cuda --precision bf16 \
      --batch-size "$2" --steps 20 --warmup 5 2>&1 | tail -n 6
  done

  python -c "from icezoo.engine.default_data import default_dataset; default_dataset()" >/dev/null  # simulated once, not timed
  step icezoo train --device cuda --precision bf16 --workers 4 --epochs 50 "(stopped by SIGINT after 120 s)"
  timeout -s INT 120 python -m icezoo.cli.main train --device cuda --precision bf16 --workers 4 --epochs 50 \
    --runs-dir "$runs" --name GPU_2MIN --no-progress 2>&1 | tail -n 5
  python - "$runs/GPU_2MIN" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
if (run / "metrics.json").is_file():
    hist = json.loads((run / "metrics.json").read_text()).get("history", [])
    for h in hist[-3:]:
        print({k: h[k] for k in sorted(h) if not isinstance(h[k], (list, dict))})
info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
print({k: info.get(k) for k in ("status", "step", "events_seen", "train_time_s", "best_val", "final_val") if k in info})
PY
  step icezoo evaluate GPU_2MIN --no-plots
  timeout 45 python -m icezoo.cli.main evaluate GPU_2MIN --runs-dir "$runs" --device cuda --no-plots 2>&1 | tail -n 8
} 2>&1 | tee "$out"
echo "figures written to $out"
