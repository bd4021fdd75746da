"""Start the vla_controller node.

    ros2 launch launch/vla_controller.launch.py
    ros2 launch launch/vla_controller.launch.py namespace:=arm1 use_sim_time:=true \
        params_file:=/path/to/my_robot.yaml command_topic:=/forward_position_controller/commands

Every node parameter lives in the parameters file (config/controller.yaml documents
them all); the arguments below override the few that differ between runs.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILT = os.path.join(ROOT, "target", "release", "vla_controller")


def generate_launch_description():
    args = [
        DeclareLaunchArgument(
            "executable",
            default_value=BUILT if os.path.exists(BUILT) else "vla_controller",
            description="path of the vla_controller binary (or a name on PATH)",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(ROOT, "config", "controller.yaml"),
            description="ROS parameters file",
        ),
        DeclareLaunchArgument(
            "policy_path",
            default_value=os.path.join(ROOT, "policy", "demo_policy.pt"),
            description="TorchScript policy file",
        ),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda or cuda:N"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock"),
        DeclareLaunchArgument(
            "command_topic",
            default_value="joint_commands",
            description="where commands go, e.g. /forward_position_controller/commands",
        ),
    ]
    node = Node(
        executable=LaunchConfiguration("executable"),
        name="vla_controller",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "policy_path": LaunchConfiguration("policy_path"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        remappings=[("joint_commands", LaunchConfiguration("command_topic"))],
    )
    return LaunchDescription(args + [node])
