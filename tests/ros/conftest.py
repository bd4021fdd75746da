"""Shared fixtures of the integration tests: the real node binary, started as `ros2 run`
or `ros2 launch` would start it, and rclpy peers on an isolated ROS domain."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "vla_controller"
PARAMS = ROOT / "config" / "controller.yaml"
sys.path.insert(0, str(ROOT / "python"))

# An isolated, local-only ROS graph per test run, chosen before rclpy starts so that
# the peers and the node processes agree.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import rclpy  # noqa: E402

from vla_demo.ros_peers import Peers, Recorder  # noqa: E402


def wait_for(cond, timeout: float, what: str, every: float = 0.02):
    """Polls `cond` until it returns a truthy value, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_until_serving(peers, node: str = "vla_controller") -> None:
    """Until `peers.recorder` has two /diagnostics messages from the node: past its
    start-up, with its SIGINT handler in place, so that stopping it is a clean shutdown."""
    def published() -> int:
        with peers.recorder.lock:
            return sum(any(node in st.name for st in arr.status) for _, arr in peers.recorder.diagnostics)
    wait_for(lambda: published() >= 2, 60, "the node's diagnostics")


class NodeProcess:
    """The vla_controller binary in a child process, its output in a log file."""

    def __init__(self, *ros_args: str, params_file: Path | None = PARAMS):
        assert BIN.exists(), f"{BIN} is missing: run `make build`"
        self.log = tempfile.NamedTemporaryFile(prefix="vla_controller-", suffix=".log", delete=False)
        args = [str(BIN), "--ros-args"]
        if params_file is not None:
            args += ["--params-file", str(params_file)]
        args += ["-p", f"policy_path:={ROOT / 'policy' / 'demo_policy.pt'}", *ros_args]
        self.args = args
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_node(request):
    started: list[NodeProcess] = []

    def start(*ros_args: str, **kw) -> NodeProcess:
        n = NodeProcess(*ros_args, **kw)
        started.append(n)
        return n

    yield start
    for n in started:
        code = n.stop()
        if getattr(request.node, "rep_call_failed", False):
            print(f"--- node output (exit {code}) ---\n{n.output()[-4000:]}")


def pytest_collection_modifyitems(items):
    # The colcon build shares target/ with `make build` and leaves its own build of the
    # binary there: it runs after every test of the checkout's build.
    items.sort(key=lambda item: item.path.name == "test_colcon_package.py")


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
