#!/usr/bin/env bash
# Idempotent set-up of everything the build, the demo and the tests need, from the
# package registries only: Debian packages for the build, and a project-local virtual
# environment (.venv) holding a ROS 2 Kilted prefix (ros-kilted-* wheels) and
# torch==2.11.0, the libtorch that tch 0.24 links against; and a second environment
# (.venv-lerobot) with LeRobot, for the LeRobot export and its parity tests.
#
# On a robot with a normal ROS 2 install (Humble, Jazzy or Kilted sourced) none of
# this is needed for the node itself: see README.md, "On a robot".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.setup-v9"

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

if [ ! -f "$stamp" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  # Only the ROS packages the node and the test peers use; tokenizers (the Python twin
  # of the Rust crate the node reads tokenizer.json with) for the tokenizer parity test.
  "$venv/bin/pip" install -q \
    ros-kilted-rclpy ros-kilted-rmw-fastrtps-cpp \
    ros-kilted-std-msgs ros-kilted-sensor-msgs ros-kilted-trajectory-msgs \
    ros-kilted-diagnostic-msgs ros-kilted-rosgraph-msgs ros-kilted-builtin-interfaces \
    ros-kilted-rcl-interfaces ros-kilted-std-srvs ros-kilted-action-msgs \
    torch==2.11.0 numpy pytest rosbags \
    tokenizers==0.22.2
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
  install_package
  touch "$stamp"
  echo "setup: environment ready in $venv"
fi
# A venv made by an older checkout, or the package installed from another folder.
"$venv/bin/python" -c 'import vla_demo, sys; from pathlib import Path; sys.exit(Path(vla_demo.__file__).resolve().parents[1] != Path(sys.argv[1]) / "python")' "$root" 2>/dev/null || install_package

# LeRobot (python -m vla_export.lerobot and tests/lerobot). lerobot 0.4.4 pins torch<2.11
# and torchvision<0.26, but its policy code runs on the torch 2.11 the node links, and
# the parity tests must compare against exactly that torch. So LeRobot gets its own
# environment layered over .venv: a .pth file puts .venv's site-packages (torch, numpy,
# pytest) after its own, lerobot is installed without its pins, and beside it only the
# modules that importing its policies, processors and factory pulls in (LeRobot's own
# version ranges; transformers and num2words for SmolVLA, as its `smolvla` extra has
# them), with torchvision 0.26.0, the release built for torch 2.11.0. .venv is left
# untouched.
lr_venv="$root/.venv-lerobot"
lr_stamp="$lr_venv/.setup-lerobot-v2"
if [ ! -f "$lr_stamp" ]; then
  rm -rf "$lr_venv"
  "$venv/bin/python" -m venv "$lr_venv"
  "$lr_venv/bin/pip" install -q --upgrade pip >/dev/null
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  lr_site=$("$lr_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$site" > "$lr_site/zz_vla_controller_venv.pth"
  "$lr_venv/bin/pip" install -q --no-deps lerobot==0.4.4
  "$lr_venv/bin/pip" install -q \
    torchvision==0.26.0 'draccus==0.10.0' 'huggingface-hub>=0.34.2,<0.36' 'safetensors>=0.4.3,<1' \
    'einops>=0.8,<0.9' 'datasets>=4,<5' 'diffusers>=0.27.2,<0.36' 'accelerate>=1.10,<2' \
    'av>=15,<16' 'imageio>=2.34,<3' 'termcolor>=2.4,<4' 'deepdiff>=7.0.1,<9' \
    'pyserial>=3.5,<4' 'gymnasium>=1.1.1,<2' \
    'transformers>=4.57.1,<5' 'num2words>=0.5.14,<0.6' 2>&1 | { grep -v '^lerobot 0.4.4 requires\|dependency resolver does not' || true; }
  # The layering must not have replaced the node's torch.
  "$lr_venv/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")'
  touch "$lr_stamp"
  echo "setup: LeRobot environment ready in $lr_venv"
fi
