#!/usr/bin/env bash
# The stage benchmark (benches/pipeline.rs) on a GPU, for a machine that has an NVIDIA
# GPU and PyTorch 2.11 with CUDA but neither ROS 2 nor a Rust toolchain.
#
#   benches/gpu.sh pack   here: builds the benchmark and puts it, stripped, into
#                         target/gpu (about 2.5 MB: it links libtorch only)
#   benches/gpu.sh run    there, from the repository's root with target/gpu copied over:
#                         forward pass and occlusion on cuda, then on cpu for comparison
#
# The binary loads libtorch from the Python torch found there (same version, 2.11), and
# libtorch_cuda.so with it, as the node does with `device: cuda`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "${1:-}" in
pack)
  make build >/dev/null
  source scripts/env.sh
  bin=$(cargo bench --bench pipeline --no-run --message-format=json 2>/dev/null \
    | python -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pipeline" and m.get("executable"):
        print(m["executable"])')
  mkdir -p target/gpu
  strip -o target/gpu/pipeline "$bin"
  ls -la target/gpu
  ;;
run)
  torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  python3 -c 'import torch; print("torch", torch.__version__, "|",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")'
  status=0
  for device in cuda cpu; do
    echo "== $device"
    VLA_BENCH_DEVICE=$device VLA_BENCH_OCCLUSION_BATCHES=16,64,577 target/gpu/pipeline || status=1
  done
  exit $status
  ;;
*)
  sed -n '2,11p' "$0"
  exit 2
  ;;
esac
