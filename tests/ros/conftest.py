"""The live graph's fixtures (the node binary, rclpy peers on an isolated domain)."""

from vla_demo.ros_fixtures import *  # noqa: F401,F403


def pytest_collection_modifyitems(items):
    # The colcon build shares target/ with `make build` and leaves its own build of the
    # binary there: it runs after every test of the checkout's build.
    items.sort(key=lambda item: item.path.name == "test_colcon_package.py")
