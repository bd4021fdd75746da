"""Start the vla_controller node, and with rviz:=true RViz with the node's layout.

Installed by colcon (`source install/setup.bash` first):
    ros2 launch vla_controller vla_controller.launch.py
    ros2 launch vla_controller vla_controller.launch.py params_file:=/path/to/my_robot.yaml \
        command_topic:=/forward_position_controller/commands namespace:=arm1
From a checkout (after `cargo build --release`):
    ros2 launch launch/vla_controller.launch.py

The parameters file is in charge: `policy_path`, `device` and `use_sim_time` reach the
node only when given on the command line, and then win over the file. The bundled
parameters file (the default, config/controller.yaml) names the demo policy by a
relative path; with it, and no policy_path given, the node gets the bundled demo policy
by its absolute path, so that the launch works from any directory.

The files (parameters, RViz layout, demo policy) are found in the package's share
directory when installed, and in the source tree when this file runs from a checkout.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "vla_controller"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# In a checkout this file lies in launch/ beside Cargo.toml; installed, in
# share/vla_controller/launch/, where no Cargo.toml is.
CHECKOUT = os.path.exists(os.path.join(ROOT, "Cargo.toml"))
BUILT = os.path.join(ROOT, "target", "release", PACKAGE)
# Passed to the node only when given on the command line (empty means not given).
OVERRIDES = ("policy_path", "device", "use_sim_time")


def share_directory() -> str:
    if CHECKOUT:
        return ROOT
    from ament_index_python.packages import get_package_share_directory

    return get_package_share_directory(PACKAGE)


def generate_launch_description():
    share = share_directory()
    bundled_params = os.path.join(share, "config", "controller.yaml")
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=bundled_params,
            description="ROS parameters file; it decides every parameter not given below",
        ),
        DeclareLaunchArgument(
            "policy_path",
            default_value="",
            description="TorchScript policy file (default: the parameters file's)",
        ),
        DeclareLaunchArgument(
            "device", default_value="", description="cpu, cuda or cuda:N (default: the parameters file's)"
        ),
        DeclareLaunchArgument(
            "use_sim_time", default_value="", description="true: follow /clock (default: the parameters file's)"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument(
            "command_topic",
            default_value="joint_commands",
            description="where commands go, e.g. /forward_position_controller/commands",
        ),
        DeclareLaunchArgument(
            "log_level",
            default_value="",
            description="rcl log level: debug, info, warn, error, or <logger>:=<level> (default: info)",
        ),
        DeclareLaunchArgument("rviz", default_value="false", description="true: also start RViz with the node's layout"),
    ]
    if CHECKOUT:
        args.append(
            DeclareLaunchArgument(
                "executable",
                default_value=BUILT if os.path.exists(BUILT) else PACKAGE,
                description="path of the vla_controller binary (or a name on PATH)",
            )
        )
    return LaunchDescription(args + [OpaqueFunction(function=launch_actions, args=[share, bundled_params])])


def launch_actions(context, share: str, bundled_params: str):
    """The actions, once the command line's values are known: an override is passed
    only for an argument that was given."""

    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = value("params_file")
    # launch_ros reads each value as YAML, as it would from a file ("true" is a bool).
    overrides = {name: LaunchConfiguration(name) for name in OVERRIDES if value(name) != ""}
    if "policy_path" not in overrides and os.path.realpath(params_file) == os.path.realpath(bundled_params):
        overrides["policy_path"] = os.path.join(share, "policy", "demo_policy.pt")
    parameters = [params_file] + ([overrides] if overrides else [])

    executable = {"executable": value("executable")} if CHECKOUT else {"package": PACKAGE, "executable": PACKAGE}
    actions = [
        Node(
            **executable,
            name=PACKAGE,
            namespace=value("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=parameters,
            remappings=[("joint_commands", value("command_topic"))],
            ros_arguments=["--log-level", value("log_level")] if value("log_level") else None,
        )
    ]
    if value("rviz").lower() in ("true", "1"):
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                # The layout names the un-namespaced node's topics.
                arguments=["-d", os.path.join(share, "rviz", "vla_controller.rviz")],
                output="screen",
            )
        )
    return actions
