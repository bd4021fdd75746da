#!/usr/bin/env bash
# Idempotent set-up of everything the build, the demo and the tests need, from the
# package registries only: Debian packages for the build, and a project-local virtual
# environment (.venv) holding a ROS 2 Kilted prefix (ros-kilted-* wheels) and
# torch==2.11.0, the libtorch that tch 0.24 links against.
#
# On a robot with a normal ROS 2 install (Humble, Jazzy or Kilted sourced) none of
# this is needed for the node itself: see README.md, "Building on a robot".
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

# The project's own Python package (python/vla_demo), editable, so that tests, scripts
# and benchmarks import it from this checkout.
install_package() {
  "$venv/bin/pip" install -q --no-deps -e "$root/python"
}

if [ -f "$stamp" ]; then
  # A venv made by an older checkout, or the package installed from another folder.
  "$venv/bin/python" -c 'import vla_demo, sys; from pathlib import Path; sys.exit(Path(vla_demo.__file__).resolve().parents[1] != Path(sys.argv[1]) / "python")' "$root" 2>/dev/null || install_package
  exit 0
fi

python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
# Only the ROS packages the node and the test peers use.
"$venv/bin/pip" install -q \
  ros-kilted-rclpy ros-kilted-rmw-fastrtps-cpp \
  ros-kilted-std-msgs ros-kilted-sensor-msgs ros-kilted-trajectory-msgs \
  ros-kilted-diagnostic-msgs ros-kilted-rosgraph-msgs ros-kilted-builtin-interfaces \
  ros-kilted-rcl-interfaces ros-kilted-std-srvs ros-kilted-action-msgs \
  torch==2.11.0 numpy pytest rosbags
# rosidl and ament CMake, to build the interface package in msg/ (scripts/build_msgs.sh).
"$venv/bin/pip" install -q \
  ros-kilted-ament-cmake ros-kilted-ament-package catkin-pkg ros-kilted-ament-cmake-ros-core \
  ros-kilted-ament-cmake-include-directories \
  ros-kilted-rosidl-default-generators ros-kilted-rosidl-core-generators

# The wheels link rcl straight to Fast DDS and ship no librmw_implementation.so,
# which r2r links against.
ln -sf librmw_fastrtps_cpp.so "$venv/lib/librmw_implementation.so"
install_package
touch "$stamp"
echo "setup: environment ready in $venv"
