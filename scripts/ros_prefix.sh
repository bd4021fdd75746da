# Source this file in bash to use the project's ROS 2 Kilted prefix (.venv, from the
# ros-kilted-* wheels) as a ROS install's setup.bash is used: it is what
# `source /opt/ros/<distro>/setup.bash` is on a robot. scripts/env.sh sources it and adds
# the project's own paths; the README's robot steps are tested with it standing in for
# /opt/ros/<distro>/setup.bash.
_vla_prefix=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)/.venv
_vla_prefix_site=$_vla_prefix/lib/python3.11/site-packages
if [ ! -d "$_vla_prefix" ]; then
  echo "scripts/ros_prefix.sh: $_vla_prefix is missing; run 'make setup' first" >&2
else
  # Prepends $2 to the path list named $1 unless it is there already, so that sourcing
  # this file twice changes nothing. (r2r regenerates its bindings whenever
  # AMENT_PREFIX_PATH changes, and its cache of them loses configuration on the way back.)
  _vla_prefix_prepend() {
    case ":${!1:-}:" in *":$2:"*) ;; *) export "$1=$2${!1:+:${!1}}" ;; esac
  }
  export VIRTUAL_ENV=$_vla_prefix
  _vla_prefix_prepend PATH "$_vla_prefix/bin"
  _vla_prefix_prepend AMENT_PREFIX_PATH "$_vla_prefix"
  for _vla_prefix_d in "$_vla_prefix_site"/ros_*.libs; do
    [ -d "$_vla_prefix_d" ] && _vla_prefix_prepend LD_LIBRARY_PATH "$_vla_prefix_d"
  done
  _vla_prefix_prepend LD_LIBRARY_PATH "$_vla_prefix/lib"
  # librcl in these wheels pulls in rosidl Python typesupport, which needs libpython's
  # symbols even in a non-Python process such as the node.
  _vla_prefix_libpython=$("$_vla_prefix/bin/python3" -c 'import sysconfig,os; print(os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")))' 2>/dev/null)
  case ":${LD_PRELOAD:-}:" in *":$_vla_prefix_libpython:"*) ;; *) [ -f "$_vla_prefix_libpython" ] && export LD_PRELOAD=$_vla_prefix_libpython${LD_PRELOAD:+:$LD_PRELOAD} ;; esac
  # The wheels link rcl straight to Fast DDS.
  export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
  export ROS_VERSION=2 ROS_PYTHON_VERSION=3 ROS_DISTRO=kilted
fi
unset _vla_prefix _vla_prefix_site _vla_prefix_libpython _vla_prefix_d
unset -f _vla_prefix_prepend
