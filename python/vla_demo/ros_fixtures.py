"""pytest fixtures for tests on a live ROS 2 graph: the real node binary, started as
`ros2 run` or `ros2 launch` would start it (`start_node`), and rclpy peers on an
isolated, local-only ROS domain (`peers`). A test folder's conftest.py takes them with

    from vla_demo.ros_fixtures import *  # noqa: F401,F403
"""

from __future__ import annotations

import os
import random

import pytest

# An isolated, local-only ROS graph per test run, chosen before rclpy starts so that
# the peers and the node processes agree.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import rclpy  # noqa: E402

from .node_process import NodeProcess  # noqa: E402
from .ros_peers import Peers, Recorder  # noqa: E402

__all__ = ["start_node", "peers", "pytest_runtest_makereport", "pytest_sessionfinish"]

@pytest.fixture
def start_node(request):
    started: list[NodeProcess] = []

    def start(*ros_args: str, **kw) -> NodeProcess:
        n = NodeProcess.node(*ros_args, **kw)
        started.append(n)
        return n

    yield start
    for n in started:
        code = n.stop()
        if getattr(request.node, "rep_call_failed", False):
            print(f"--- node output (exit {code}) ---\n{n.output()[-4000:]}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call_failed = rep.failed


@pytest.fixture
def peers():
    p = Peers(f"peers_{os.getpid()}_{random.randint(0, 1 << 30)}")
    p.recorder = Recorder()
    yield p
    p.close()


def pytest_sessionfinish(session, exitstatus):
    if rclpy.ok():
        rclpy.shutdown()
