#!/usr/bin/env bash
# Idempotent set-up of everything the build, the demo and the tests need, from the
# package registries only: Debian packages for the build, and a project-local virtual
# environment (.venv) holding a ROS 2 Kilted prefix (ros-kilted-* wheels) and
# torch==2.11.0, the libtorch that tch 0.24 links against.
#
# On a robot with a normal ROS 2 install (Humble, Jazzy or Kilted sourced) none of
# this is needed for the node itself: see README.md, "On a robot".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.setup-v6"

apt_needed=()
# bindgen (r2r) needs libclang; cmake builds the interface package in msg/ later on.
for pkg in libclang-dev cmake; do
  dpkg -s "$pkg" >/dev/null 2>&1 || apt_needed+=("$pkg")
done
if [ ${#apt_needed[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${apt_needed[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_needed[@]}" >/dev/null
fi

if [ -f "$stamp" ]; then
  exit 0
fi

python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
# Only the ROS packages the node and the test peers use.
"$venv/bin/pip" install -q \
  ros-kilted-rclpy ros-kilted-rmw-fastrtps-cpp \
  ros-kilted-std-msgs ros-kilted-sensor-msgs ros-kilted-trajectory-msgs \
  ros-kilted-diagnostic-msgs ros-kilted-rosgraph-msgs ros-kilted-builtin-interfaces \
  ros-kilted-rcl-interfaces \
  torch==2.11.0 numpy pytest rosbags
# rosidl and ament CMake, to build the interface package in msg/ (scripts/build_msgs.sh).
"$venv/bin/pip" install -q \
  ros-kilted-ament-cmake ros-kilted-ament-package catkin-pkg ros-kilted-ament-cmake-ros-core \
  ros-kilted-ament-cmake-include-directories \
  ros-kilted-rosidl-default-generators ros-kilted-rosidl-core-generators

# colcon with its Rust support, as a robot installs it (README, "On a robot"):
# tests/ros/test_colcon_package.py builds the package with it. colcon-cargo 0.2 is the
# first that finds msg/ (Cargo.toml's [workspace.metadata.colcon]); colcon-ros-cargo
# brings cargo-ament-build.
"$venv/bin/pip" install -q colcon-common-extensions 'colcon-cargo>=0.2' colcon-ros-cargo

# The wheels link rcl straight to Fast DDS and ship no librmw_implementation.so,
# which r2r links against.
ln -sf librmw_fastrtps_cpp.so "$venv/lib/librmw_implementation.so"
touch "$stamp"
echo "setup: environment ready in $venv"
