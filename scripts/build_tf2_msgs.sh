#!/usr/bin/env bash
# Build tf2_msgs (the message of /tf and /tf_static) into a virtual environment that has the ROS 2 wheels from PyPI,
# which do not include it. Called by scripts/setup.sh when no ROS 2 distro is sourced (a distro has tf2_msgs).
#
#   bash scripts/build_tf2_msgs.sh [VENV]        (default .venv)
#
# What it does: the rosidl toolchain and ament_cmake come from PyPI (pinned in requirements-ros.txt: rosidl generators,
# type supports, ament_cmake), the compiler and CMake from Debian (gcc, g++, cmake, python3-dev); CMake generates
# the C, C++, Fast DDS, introspection and Python type support of scripts/ros_interfaces/tf2_msgs and installs them into
# VENV exactly where the ROS wheels put theirs (VENV/lib, VENV/share, VENV/lib/pythonX.Y/site-packages), so
# `import tf2_msgs.msg` works in VENV like any other interface package. Idempotent: skipped when the installed build
# has the same inputs (a hash of the interface files, this script and the toolchain versions) and imports.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=$(cd "${1:-.venv}" && pwd)
SRC=scripts/ros_interfaces/tf2_msgs
BUILD=build/tf2_msgs
PY="$VENV/bin/python"
say() { printf '\033[1m[tf2_msgs]\033[0m %s\n' "$*"; }

toolchain=$("$PY" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null \
  | grep -E '^ros-(rosidl|ament-cmake|ament-package|geometry-msgs)' | sort || true)
hash=$( (cat "$SRC/package.xml" "$SRC/CMakeLists.txt" "$SRC"/msg/*.msg "$0"; echo "$toolchain") | sha256sum | cut -d' ' -f1)
STAMP="$VENV/share/tf2_msgs/vidyn-build-hash"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ] && "$PY" -c "import tf2_msgs.msg" 2>/dev/null; then
  say "up to date"
  exit 0
fi

for tool in cmake c++ cc; do
  command -v "$tool" >/dev/null || { say "error: $tool not found (apt-get install cmake g++ python3-dev)"; exit 1; }
done
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

t0=$(date +%s)
say "building from $SRC into $VENV"
mkdir -p "$(dirname "$BUILD")"
rm -rf "$BUILD"
# ament's CMake finds its resources (type supports, packages) through AMENT_PREFIX_PATH; the toolchain's own scripts
# run with the venv's Python.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
cmake -S "$SRC" -B "$BUILD" "${generator[@]}" -Wno-dev \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$PY" -DPython3_FIND_VIRTUALENV=ONLY >"$BUILD.log" 2>&1 \
  || { tail -30 "$BUILD.log"; say "error: configuring failed (full log: $BUILD.log)"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >>"$BUILD.log" 2>&1 \
  || { tail -30 "$BUILD.log"; say "error: build failed (full log: $BUILD.log)"; exit 1; }
cmake --install "$BUILD" >>"$BUILD.log" 2>&1 \
  || { tail -30 "$BUILD.log"; say "error: install failed (full log: $BUILD.log)"; exit 1; }
"$PY" -c "import tf2_msgs.msg; tf2_msgs.msg.TFMessage()" \
  || { say "error: built, but 'import tf2_msgs.msg' fails in $VENV"; exit 1; }
echo "$hash" > "$STAMP"
say "done in $(( $(date +%s) - t0 )) s"
