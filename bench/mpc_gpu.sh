#!/usr/bin/env bash
# Visual-MPC speed on a CUDA machine without MuJoCo / open3d / warp (torch + CUDA, numpy, scipy, gsplat suffice):
# the saved push scene (bench/data/mpc_push_scene.pt), replanning time by backend and render setting with the batched
# renderer (gsplat, then torch on CUDA), then the renderer's CUDA parity tests (batched gsplat included) where pytest
# is installed. Writes OUT/mpc_rate_cuda_gsplat.{json,md}, OUT/mpc_rate_cuda_torch.{json,md}, OUT/render_cuda_tests.txt.
#     bash bench/mpc_gpu.sh OUT            (under 2 minutes: the steps are capped at 60 + 20 + 35 s by `timeout`)
set -u -o pipefail
OUT=${1:?usage: bash bench/mpc_gpu.sh OUT}
PY=${PYTHON:-python3}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
rc=0
timeout 60 "$PY" bench/mpc_rate.py --scene bench/data/mpc_push_scene.pt --device cuda \
    --backends static,constant_velocity,learned --render-backend gsplat --repeats 5 --out "$OUT" || rc=1
timeout 20 "$PY" bench/mpc_rate.py --scene bench/data/mpc_push_scene.pt --device cuda \
    --backends static --render-backend torch --repeats 3 --no-variants --out "$OUT" || rc=1
if "$PY" -c "import pytest" 2>/dev/null; then
    timeout 35 "$PY" -m pytest -q -p no:cacheprovider test/test_render_cuda.py 2>&1 | tail -15 \
        | tee "$OUT/render_cuda_tests.txt" || rc=1
fi
exit $rc
