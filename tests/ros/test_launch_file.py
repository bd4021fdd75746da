"""launch/vla_controller.launch.py, run as `ros2 launch` runs it.

`launch` and `launch_ros` are not on PyPI, so this test stands in for the part of them
that the file uses: it records the declared arguments and the Node action, resolves
the launch arguments as `name:=value` on the command line would, and turns the action
into the command line launch_ros (Jazzy, Kilted) gives a node: `--ros-args`, the
`__node` and `__ns` remaps, the parameters file, a generated file holding the inline
parameters under the node's full name with their values read as YAML, then the
remappings. The node started from that command line must then
work on a real graph: under the namespace, commanding on the remapped topic, with the
inline parameters applied."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import yaml
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters

from vla_demo.node_process import ROOT, wait_for
from vla_demo.ros_peers import START, instruction, two_sided_scene, xy_error
from vla_demo.ros_peers import ScenePublisher, SimArm

LAUNCH_FILE = ROOT / "launch" / "vla_controller.launch.py"


class LaunchConfiguration:
    def __init__(self, name: str):
        self.name = name


class DeclareLaunchArgument:
    def __init__(self, name: str, default_value: str | None = None, description: str = ""):
        self.name, self.default_value, self.description = name, default_value, description


class Node:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class LaunchDescription:
    def __init__(self, entities):
        self.entities = list(entities)


def load_launch_description(monkeypatch) -> LaunchDescription:
    modules = {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
    }
    for name, attrs in modules.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    namespace: dict = {"__file__": str(LAUNCH_FILE), "__name__": "launch_file"}
    exec(compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec"), namespace)
    return namespace["generate_launch_description"]()


def node_command(ld: LaunchDescription, launch_args: dict[str, str], tmp: Path) -> list[str]:
    declared = {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    unknown = set(launch_args) - set(declared)
    assert not unknown, f"not declared by the launch file: {unknown}"
    values = {name: launch_args.get(name, d.default_value) for name, d in declared.items()}

    def resolve(v):
        if isinstance(v, LaunchConfiguration):
            assert v.name in declared, f"LaunchConfiguration({v.name!r}) is not a declared argument"
            return values[v.name]
        return v

    (node,) = [e for e in ld.entities if isinstance(e, Node)]
    kw = {k: resolve(v) for k, v in node.kwargs.items() if k not in ("parameters", "remappings")}
    ns = "/" + kw.get("namespace", "").strip("/")
    full_name = ns.rstrip("/") + "/" + kw["name"]
    cmd = [kw["executable"], "--ros-args", "-r", f"__node:={kw['name']}", "-r", f"__ns:={ns}"]
    for i, p in enumerate(node.kwargs["parameters"]):
        if isinstance(p, dict):
            # launch_ros reads each substituted value as YAML (so "false" is a bool) and
            # writes them to a file under the node's full name.
            params = {k: yaml.safe_load(resolve(v)) for k, v in p.items()}
            path = tmp / f"inline_{i}.yaml"
            path.write_text(yaml.safe_dump({full_name: {"ros__parameters": params}}))
        else:
            path = Path(resolve(p))
            assert path.exists(), f"parameters file {path} is missing"
        cmd += ["--params-file", str(path)]
    for src, dst in node.kwargs.get("remappings", []):
        cmd += ["-r", f"{resolve(src)}:={resolve(dst)}"]
    return cmd


def test_the_launch_file_declares_what_its_node_uses(monkeypatch):
    ld = load_launch_description(monkeypatch)
    declared = {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    assert {"params_file", "policy_path", "device", "namespace", "use_sim_time", "command_topic"} <= set(declared)
    assert all(d.description for d in declared.values())
    assert Path(declared["params_file"].default_value) == ROOT / "config" / "controller.yaml"
    assert Path(declared["policy_path"].default_value).exists()
    # The inline parameters are node parameters, documented in the parameters file.
    (node,) = [e for e in ld.entities if isinstance(e, Node)]
    documented = yaml.safe_load((ROOT / "config" / "controller.yaml").read_text())["/**"]["ros__parameters"]
    inline = {k for p in node.kwargs["parameters"] if isinstance(p, dict) for k in p}
    assert inline - {"use_sim_time"} <= set(documented), inline - set(documented)


def test_a_node_launched_with_a_namespace_and_a_command_topic_drives_the_arm(monkeypatch, peers):
    ld = load_launch_description(monkeypatch)
    tmp = Path(tempfile.mkdtemp(prefix="vla_launch-"))
    cmd = node_command(ld, {"namespace": "arm1", "command_topic": "/forward_position_controller/commands"}, tmp)
    assert Path(cmd[0]) == ROOT / "target" / "release" / "vla_controller"

    s, left, _ = two_sided_scene(5)
    cams = ScenePublisher(peers.node, s, prefix="/arm1/")
    # The arm takes its commands where the launch argument sent them.
    arm = SimArm(peers.node, START, prefix="/arm1/", command_topic="/forward_position_controller/commands")
    peers.start()
    cams.instruct(instruction(s, left))
    log = tmp / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, "the arm over the instructed item")
        assert ("vla_controller", "/arm1") in peers.node.get_node_names_and_namespaces()

        client = peers.node.create_client(GetParameters, "/arm1/vla_controller/get_parameters")
        wait_for(client.service_is_ready, 10, "the node's parameter service")
        fut = client.call_async(GetParameters.Request(names=["device", "use_sim_time", "policy_path"]))
        wait_for(fut.done, 10, "get_parameters")
        device, sim_time, policy = fut.result().values
        assert device.string_value == "cpu"
        assert sim_time.type == ParameterType.PARAMETER_BOOL and sim_time.bool_value is False
        assert Path(policy.string_value) == ROOT / "policy" / "demo_policy.pt"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0, log.read_text()[-3000:]
