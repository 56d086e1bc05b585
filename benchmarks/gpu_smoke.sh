#!/usr/bin/env bash
# GPU smoke test and figures, for a person with a CUDA machine (CI never runs it):
#   1. the tiny pipeline (tests/configs/tiny.yaml) and the default one (params.yaml), each run
#      whole by Snakemake in a scratch folder with device: cuda, train.bf16: true, train.nproc: N;
#   2. diffusion training throughput (images/s) and peak GPU memory of each config
#      (benchmarks/train_throughput.py on the latents that run encoded).
# Prints one JSON line: the GPU, torch/CUDA versions, and per config the pipeline's wall time,
# images/s and peak memory (MiB).
#
#   benchmarks/gpu_smoke.sh [NPROC]      # from the repository root; NPROC GPUs for training (default 1)
set -euo pipefail
nproc=${1:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_smoke: no CUDA device here')"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

run_config() {  # name params-file -> JSON fragment
    local name=$1 params=$2 dir=$scratch/$1
    mkdir -p "$dir"
    cp "$root/dvc.yaml" "$root/Snakefile" "$root/resources.yaml" "$dir/"
    ln -s "$root/src" "$dir/src"
    ln -s "$root/captions" "$dir/captions"  # the Snakefile's report() captions
    python - "$params" "$dir/params.yaml" "$nproc" <<'PY'
import sys, yaml
p = yaml.safe_load(open(sys.argv[1]))
p["device"] = "cuda"
p["train"].update(bf16=True, nproc=int(sys.argv[3]))
yaml.safe_dump(p, open(sys.argv[2], "w"), sort_keys=False)
PY
    local start end
    start=$(date +%s.%N)
    (cd "$dir" && snakemake --cores all --resources gpu="$nproc" -q > snakemake.log 2>&1) \
        || { tail -50 "$dir/snakemake.log" >&2; exit 1; }
    end=$(date +%s.%N)
    local train
    train=$(cd "$dir" && python "$root/benchmarks/train_throughput.py" --params params.yaml \
        --latents data/latents/train.safetensors --device cuda)
    python -c "import json, sys; print(json.dumps({'$name': {'pipeline_seconds': round($end - $start, 1), **json.loads(sys.argv[1])}}))" "$train"
}

tiny=$(run_config tiny "$root/tests/configs/tiny.yaml")
default=$(run_config default "$root/params.yaml")
python - "$tiny" "$default" "$nproc" <<'PY'
import json, sys, torch
out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda, "nproc": int(sys.argv[3])}
for fragment in sys.argv[1:3]:
    out.update(json.loads(fragment))
print(json.dumps(out))
PY
