"""launch/vla_controller.launch.py, run as `ros2 launch` runs it (through the stand-in for
`launch` and `launch_ros` in launch_standin.py, which are not on PyPI). The node started
from the command line the file yields must work on a real graph: under the namespace,
commanding on the remapped topic, with the user's parameters file in charge of every
parameter not given on the command line."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters

from vla_demo import launch_standin as ls
from vla_demo.node_process import ROOT, wait_for
from vla_demo.ros_peers import START, instruction, two_sided_scene, wait_until_serving, xy_error
from vla_demo.ros_peers import ScenePublisher, SimArm

LAUNCH_FILE = ROOT / "launch" / "vla_controller.launch.py"
DEMO_POLICY = ROOT / "policy" / "demo_policy.pt"


def parameters(peers, node: str, names: list[str]) -> dict:
    """The node's values of `names`, through its get_parameters service."""
    client = peers.node.create_client(GetParameters, f"{node}/get_parameters")
    wait_for(client.service_is_ready, 30, "the node's parameter service")
    # A service is "ready" once the request's route is matched; the reply's may still be
    # in discovery, and a reply sent before it is lost. Ask again rather than fail.
    for attempt in range(3):
        fut = client.call_async(GetParameters.Request(names=names))
        try:
            wait_for(fut.done, 10, "get_parameters")
            break
        except AssertionError:
            if attempt == 2:
                raise
    out = {}
    for name, v in zip(names, fut.result().values):
        out[name] = {
            ParameterType.PARAMETER_BOOL: lambda: v.bool_value,
            ParameterType.PARAMETER_STRING: lambda: v.string_value,
        }[v.type]()
    return out


class Launched:
    """The node started from a launch command line, its output in a file."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None):
        self.cmd, self.log = cmd, log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def launch(monkeypatch, tmp_path):
    """launch(args) starts the node as `ros2 launch launch/vla_controller.launch.py
    name:=value...` would; every node started is stopped at the end."""
    started: list[Launched] = []

    def start(launch_args: dict[str, str], launch_file: Path = LAUNCH_FILE, env: dict | None = None) -> Launched:
        run = tmp_path / f"launch_{len(started)}"
        run.mkdir()
        cmd = ls.node_command(launch_file, monkeypatch, launch_args, run)
        started.append(Launched(cmd, run / "node.log", env))
        return started[-1]

    yield start
    for n in started:
        n.stop()


def robot_params(tmp_path: Path, **values) -> Path:
    """A robot's own parameters file: the bundled one with `values` changed, under the
    node's name as a robot's file would be."""
    params = yaml.safe_load((ROOT / "config" / "controller.yaml").read_text())["/**"]["ros__parameters"]
    params.update(values)
    path = tmp_path / "my_robot.yaml"
    path.write_text(yaml.safe_dump({"vla_controller": {"ros__parameters": params}}))
    return path


def test_the_launch_file_declares_what_its_node_uses(monkeypatch, tmp_path):
    ld = ls.load(LAUNCH_FILE, monkeypatch)
    declared = ls.declared(ld)
    assert {"params_file", "policy_path", "device", "namespace", "use_sim_time", "command_topic", "log_level", "rviz"} <= set(declared)
    assert all(d.description for d in declared.values())
    # From a checkout, the files are the source tree's.
    assert Path(declared["params_file"].default_value) == ROOT / "config" / "controller.yaml"
    assert Path(declared["executable"].default_value) == ROOT / "target" / "release" / "vla_controller"
    # Nothing overrides the parameters file unless asked.
    assert declared["policy_path"].default_value == declared["device"].default_value == declared["use_sim_time"].default_value == ""

    (node,), _ = ls.nodes(ld, {"params_file": str(robot_params(tmp_path))})
    assert node.kwargs["parameters"] == [str(tmp_path / "my_robot.yaml")], "a user's file alone decides"
    assert node.kwargs.get("ros_arguments") is None
    # With the bundled file, only its relative demo policy path is made absolute.
    (node,), _ = ls.nodes(ld, {})
    inline = [p for p in node.kwargs["parameters"] if isinstance(p, dict)]
    assert inline == [{"policy_path": str(DEMO_POLICY)}]
    # Inline parameters are node parameters, documented in the parameters file.
    documented = yaml.safe_load((ROOT / "config" / "controller.yaml").read_text())["/**"]["ros__parameters"]
    (node,), _ = ls.nodes(ld, {"policy_path": "/p.pt", "device": "cuda", "use_sim_time": "true"})
    given = {k for p in node.kwargs["parameters"] if isinstance(p, dict) for k in p}
    assert given == {"policy_path", "device", "use_sim_time"}
    assert given - {"use_sim_time"} <= set(documented)


def test_rviz_comes_with_the_nodes_layout_when_asked(monkeypatch):
    ld = ls.load(LAUNCH_FILE, monkeypatch)
    assert [n.kwargs["name"] for n in ls.nodes(ld, {})[0]] == ["vla_controller"]
    found, _ = ls.nodes(ld, {"rviz": "true"})
    (rviz,) = [n for n in found if n.kwargs["name"] == "rviz2"]
    assert rviz.kwargs["package"] == "rviz2"
    flag, layout = rviz.kwargs["arguments"]
    assert flag == "-d" and Path(layout) == ROOT / "rviz" / "vla_controller.rviz" and Path(layout).exists()


def test_a_node_launched_with_a_namespace_and_a_command_topic_drives_the_arm(launch, peers):
    s, left, _ = two_sided_scene(5)
    cams = ScenePublisher(peers.node, s, prefix="/arm1/")
    # The arm takes its commands where the launch argument sent them.
    arm = SimArm(peers.node, START, prefix="/arm1/", command_topic="/forward_position_controller/commands")
    peers.start()
    cams.instruct(instruction(s, left))
    node = launch({"namespace": "arm1", "command_topic": "/forward_position_controller/commands"})
    assert Path(node.cmd[0]) == ROOT / "target" / "release" / "vla_controller"
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, "the arm over the instructed item")
    assert ("vla_controller", "/arm1") in peers.node.get_node_names_and_namespaces()
    got = parameters(peers, "/arm1/vla_controller", ["device", "use_sim_time", "policy_path"])
    # The bundled parameters file's values, and its demo policy wherever the launch runs.
    assert got == {"device": "cpu", "use_sim_time": False, "policy_path": str(DEMO_POLICY)}
    assert node.stop() == 0, node.output()[-3000:]


def test_the_parameters_file_decides_what_the_command_line_leaves_out(launch, peers, tmp_path):
    """A robot's file with its own policy (a copy of the demo policy elsewhere), device and
    use_sim_time reaches the node unchanged: nothing in the launch file replaces it."""
    policy = tmp_path / "robot_policy.pt"
    shutil.copy(DEMO_POLICY, policy)
    params = robot_params(tmp_path, policy_path=str(policy), device="cpu", use_sim_time=True)
    peers.recorder.attach(peers.node)
    peers.start()
    node = launch({"params_file": str(params)})
    wait_until_serving(peers)
    got = parameters(peers, "/vla_controller", ["device", "use_sim_time", "policy_path"])
    assert got == {"device": "cpu", "use_sim_time": True, "policy_path": str(policy)}
    assert "policy loaded and checked" in node.output()
    assert str(policy) in node.output() and str(DEMO_POLICY) not in node.output()
    assert node.stop() == 0, node.output()[-3000:]


def test_a_launch_argument_given_on_the_command_line_wins_over_the_file(launch, peers, tmp_path):
    # The file asks for a GPU this machine does not have: left alone, the node refuses to
    # start and says why, which proves that the file's device reached it.
    policy, other = tmp_path / "robot_policy.pt", tmp_path / "other_policy.pt"
    shutil.copy(DEMO_POLICY, policy)
    shutil.copy(DEMO_POLICY, other)
    params = robot_params(tmp_path, policy_path=str(policy), device="cuda:7", use_sim_time=True)
    refused = launch({"params_file": str(params)})
    assert refused.proc.wait(timeout=60) != 0
    assert "cuda:7" in refused.output(), refused.output()[-3000:]

    s, left, _ = two_sided_scene(5)
    cams = ScenePublisher(peers.node, s)
    arm = SimArm(peers.node, START)
    peers.start()
    cams.instruct(instruction(s, left))
    node = launch({"params_file": str(params), "device": "cpu", "policy_path": str(other), "use_sim_time": "false"})
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, "the arm over the instructed item")
    got = parameters(peers, "/vla_controller", ["device", "use_sim_time", "policy_path"])
    assert got == {"device": "cpu", "use_sim_time": False, "policy_path": str(other)}
    assert node.stop() == 0, node.output()[-3000:]
