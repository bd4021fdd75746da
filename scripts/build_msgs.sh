#!/usr/bin/env bash
# Builds the interface package in msg/ (vla_controller_msgs) with rosidl into
# msg/install, for r2r (Rust bindings at cargo build time) and rclpy (PYTHONPATH).
# Idempotent; run by `make build`. Needs scripts/setup.sh to have run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv
src=$root/msg
stamp=$src/install/.built
if [ -f "$stamp" ] && [ -z "$(find "$src/msg" "$src/action" "$src/CMakeLists.txt" "$src/package.xml" -newer "$stamp")" ]; then
  exit 0
fi
source "$root/scripts/env.sh"

# The wheels' CMake exports name include folders of the machine they were built on
# (/opt/python/cp311-cp311/...). Point them at this machine's Python and numpy headers,
# inside the venv only.
py_inc=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$(python -c 'import numpy; print(numpy.get_include())')
{ grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null || true; } | xargs -0 -r sed -i \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
  -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g"

rm -rf "$src/build"
cmake -S "$src" -B "$src/build" -DCMAKE_INSTALL_PREFIX="$src/install" -DCMAKE_PREFIX_PATH="$venv" \
  -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF -Wno-dev >"$src/build.log" 2>&1 \
  || { tail -30 "$src/build.log"; exit 1; }
cmake --build "$src/build" -j2 >>"$src/build.log" 2>&1 || { tail -30 "$src/build.log"; exit 1; }
cmake --install "$src/build" >>"$src/build.log" 2>&1 || { tail -30 "$src/build.log"; exit 1; }
touch "$stamp"
# r2r generates its bindings once and reruns only when environment variables change,
# so a changed message package needs the generated crates rebuilt.
if [ -d "$root/target" ]; then
  (cd "$root" && cargo clean --release -p r2r -p r2r_msg_gen >/dev/null 2>&1) || true
fi
echo "build_msgs: vla_controller_msgs installed in msg/install"
