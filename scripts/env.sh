# Source this file in bash (like a ROS setup.bash) to run the node, the tests and rclpy from any
# shell with the project's own ROS 2 Kilted prefix and libtorch:
#     . scripts/env.sh
# It expects `make setup` (scripts/setup.sh) to have created .venv. On a robot with a
# system ROS 2 install, source /opt/ros/<distro>/setup.bash instead (see README.md).
_vla_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
_vla_venv=$_vla_root/.venv
_vla_site=$_vla_venv/lib/python3.11/site-packages
if [ ! -d "$_vla_venv" ]; then
  echo "scripts/env.sh: $_vla_venv is missing; run 'make setup' first" >&2
else
  # The ROS prefix: the venv itself, as /opt/ros/<distro>/setup.bash would set it up.
  source "$_vla_root/scripts/ros_prefix.sh"
  # Prepends $2 to the path list named $1 unless it is there already (see ros_prefix.sh).
  _vla_prepend() {
    case ":${!1:-}:" in *":$2:"*) ;; *) export "$1=$2${!1:+:${!1}}" ;; esac
  }
  _vla_prepend PATH "$_vla_root/target/release"
  # The interface package in msg/ installs beside the prefix.
  _vla_prepend AMENT_PREFIX_PATH "$_vla_root/msg/install"
  for _d in "$_vla_site/torch/lib" "$_vla_root/msg/install/lib"; do
    _vla_prepend LD_LIBRARY_PATH "$_d"
  done
  _vla_prepend PYTHONPATH "$_vla_root/msg/install/lib/python3.11/site-packages"
  _vla_prepend PYTHONPATH "$_vla_root/python"
  # Whole camera images over shared memory (see the comment in config/fastdds.xml).
  export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$_vla_root/config/fastdds.xml}
  # tch links the libtorch of the venv's torch==2.11.0.
  export LIBTORCH_USE_PYTORCH=1
  # r2r 0.9.7 does not know "kilted"; Kilted's headers build with the jazzy bindings.
  export ROS_DISTRO=jazzy
  # Only the interface packages the node uses get Rust bindings (faster builds).
  export IDL_PACKAGE_FILTER="vla_controller_msgs;std_msgs;std_srvs;sensor_msgs;geometry_msgs;trajectory_msgs;diagnostic_msgs;rosgraph_msgs;builtin_interfaces;rcl_interfaces;action_msgs;unique_identifier_msgs;service_msgs;type_description_interfaces"
fi
unset _vla_root _vla_venv _vla_site _d
unset -f _vla_prepend
