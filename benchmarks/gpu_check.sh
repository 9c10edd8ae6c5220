#!/usr/bin/env bash
# The GPU check as one command on a bare GPU machine (torch there, no network, no package index):
# installs the wheels carried in .whl/ (downloaded here by scripts/gpu_wheels.py), prints the device,
# then runs benchmarks/gpu_check.py within what is left of GPU_CHECK_SECONDS (default 360: six minutes,
# the install included). Figures: OUTDIR/gpu_check.json, the whole output: OUTDIR/gpu_check.log.
# GPU_CHECK_PYTEST=1 also runs tests/gpu afterwards if at least 100 s are left. docs/gpu.md says more.
#
#   bash benchmarks/gpu_check.sh OUTDIR [benchmarks/gpu_check.py options]
set -uo pipefail

out=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR [gpu_check.py options]}
shift
total=${GPU_CHECK_SECONDS:-360}
site=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out"
log="$out/gpu_check.log"

if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no wheels in .whl/: run 'python scripts/gpu_wheels.py' where pip reaches PyPI, and carry .whl" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    2>&1 | tee "$log" || exit 3
# Nothing may be fetched: models are built from configs, never downloaded.
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

{
    echo "== installed in ${SECONDS} s: $(ls .whl | tr '\n' ' ')"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,temperature.gpu \
        --format=csv || echo "nvidia-smi failed"
    python3 - <<'EOF'
import importlib.metadata as m
import torch
names = ["torch", "diffusers", "transformers", "huggingface-hub", "peft", "accelerate", "pydantic", "numpy", "pillow"]
print("versions:", ", ".join(f"{n} {m.version(n)}" for n in names))
if torch.cuda.is_available():
    print("cuda:", torch.version.cuda, torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(),
          "bf16 native", torch.cuda.is_bf16_supported(including_emulation=False))
else:
    print("cuda: NOT AVAILABLE")
EOF
} 2>&1 | tee -a "$log"

left=$((total - SECONDS))
# The check's budget counts from now, its imports included: it starts no case that would end in the last
# 30 s, its watchdog cuts one that runs 20 s past that, and timeout is the last resort.
timeout -k 10 "$left" python3 benchmarks/gpu_check.py --out "$out" --budget-seconds $((left - 30)) \
    --started-at "$(date +%s.%N)" "$@" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "gpu_check.py hit the hard limit (${left} s); $out/gpu_check.json holds what finished" |
    tee -a "$log"

left=$((total - SECONDS))
if [ "${GPU_CHECK_PYTEST:-0}" = 1 ]; then
    if [ "$left" -ge 100 ]; then
        timeout -k 10 "$left" python3 -m pytest tests/gpu -q -p no:cacheprovider 2>&1 | tee -a "$log"
    else
        echo "tests/gpu not run: ${left} s left" | tee -a "$log"
    fi
fi
echo "== done in ${SECONDS} s (exit ${status})" | tee -a "$log"
exit "$status"
