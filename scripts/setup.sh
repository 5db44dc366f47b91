#!/usr/bin/env bash
# One-shot, idempotent setup: system libraries (when root), .venv, pinned Python packages, the package itself.
# Re-running is fast: a stamp records the hash of everything that decides what gets installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=.setup-stamp
APT_PKGS="libusb-1.0-0 libgl1 libgomp1 libosmesa6 libegl1 cmake g++"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. System libraries: open3d/pyrealsense2 need libusb, MuJoCo headless needs OSMesa (CPU) or EGL (GPU); building
#    tf2_msgs (step 4) needs CMake and a C++ compiler.
missing=()
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "warning: missing system packages (${missing[*]}); run as root: apt-get install ${missing[*]}"
  fi
fi

# 2. The virtual environment. With a sourced ROS 2 distro, see its rclpy through system site-packages.
want_sys=""
[ -n "${ROS_DISTRO:-}" ] && want_sys="--system-site-packages"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV ${want_sys}"
  "$PY" -m venv $want_sys "$VENV"
fi

hash=$( (cat requirements.txt requirements-ros.txt setup.py scripts/setup.sh scripts/build_tf2_msgs.sh \
  scripts/ros_interfaces/tf2_msgs/CMakeLists.txt scripts/ros_interfaces/tf2_msgs/package.xml \
  scripts/ros_interfaces/tf2_msgs/msg/*.msg; echo "ros=${ROS_DISTRO:-wheels}") | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ]; then
  exit 0
fi

PIP="$VENV/bin/python -m pip install --disable-pip-version-check -q"
# 3. torch first and pinned: this exact version resolves to the CPU build; anything looser pulls CUDA wheels.
say "pip install torch==2.13.0"
$PIP torch==2.13.0
say "pip install -r requirements.txt"
$PIP -r requirements.txt
if [ -z "${ROS_DISTRO:-}" ]; then
  say "pip install ROS 2 wheels (requirements-ros.txt)"
  $PIP -r requirements-ros.txt
  # 4. tf2_msgs (/tf, /tf_static) is not among the wheels: generate it with their rosidl toolchain (~10 s, cached).
  bash scripts/build_tf2_msgs.sh "$VENV"
else
  say "using the sourced ROS 2 $ROS_DISTRO rclpy"
fi
$PIP --no-deps -e .
echo "$hash" > "$STAMP"
say "done"
