"""pytest fixtures for tests on a live ROS 2 graph: the real node binary, started as
`ros2 run` or `ros2 launch` would start it (`start_node`), and rclpy peers on an
isolated, local-only ROS domain (`peers`). A test folder's conftest.py takes them with

    from vla_demo.ros_fixtures import *  # noqa: F401,F403
"""

from __future__ import annotations

import itertools
import os
import random

import pytest

# A local-only ROS graph. Each test module runs on a ROS domain of its own (`ros_domain`),
# set in the environment, where the peers and every process a test starts read it.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
_DOMAINS = itertools.cycle(random.Random(os.getpid()).sample(range(1, 102), 101))

import rclpy  # noqa: E402

from .node_process import NodeProcess  # noqa: E402
from .ros_peers import Peers, Recorder  # noqa: E402

__all__ = ["ros_domain", "start_node", "peers", "pytest_runtest_makereport", "pytest_sessionfinish"]

@pytest.fixture(scope="module", autouse=True)
def ros_domain():
    """The test module's ROS domain, as ROS 2's isolated tests get one from
    domain_coordinator: what a module leaves behind (a node still shutting down, a
    participant not yet timed out, Fast DDS's shared-memory ports of a process that was
    killed) cannot reach the next module's graph. In one CI run a node started right
    after the previous module's last one failed to open a shared-memory port ("Failed
    init_port ...: open_and_lock_file failed") and never received a camera image."""
    domain = next(_DOMAINS)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    return domain


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
