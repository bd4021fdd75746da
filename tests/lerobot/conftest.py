"""The live graph's fixtures (the node binary, rclpy peers on an isolated domain)."""

from vla_demo.ros_fixtures import *  # noqa: F401,F403
