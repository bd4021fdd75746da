"""launch/vla_controller.launch.py run as `ros2 launch` runs it, where `launch` and
`launch_ros` cannot be installed (they are not on PyPI).

This module stands in for the part of them that the file uses: it records the declared
arguments, resolves them as `name:=value` on the command line would, runs the
OpaqueFunction with those values, and turns each Node action into the command line
launch_ros (Jazzy, Kilted) gives a node: the executable (`<prefix>/lib/<package>/<name>`
through the ament index when a package is named), `--ros-args` and the ROS arguments
when there are any, `--ros-args` with the `__node` and `__ns` remaps, each parameters file, a generated file holding the
inline parameters under the node's full name with their values read as YAML, then the
remappings."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import yaml


class LaunchContext:
    def __init__(self, launch_configurations: dict[str, str]):
        self.launch_configurations = launch_configurations


class LaunchConfiguration:
    def __init__(self, name: str):
        self.name = name

    def perform(self, context: LaunchContext) -> str:
        assert self.name in context.launch_configurations, f"LaunchConfiguration({self.name!r}) is not declared"
        return context.launch_configurations[self.name]


class DeclareLaunchArgument:
    def __init__(self, name: str, default_value: str | None = None, description: str = ""):
        self.name, self.default_value, self.description = name, default_value, description


class OpaqueFunction:
    def __init__(self, function, args=None, kwargs=None):
        self.function, self.args, self.kwargs = function, list(args or []), dict(kwargs or {})


class Node:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class LaunchDescription:
    def __init__(self, entities):
        self.entities = list(entities)


def load(launch_file: Path, monkeypatch) -> LaunchDescription:
    """Runs the launch file's generate_launch_description() against the stand-in."""
    modules = {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "OpaqueFunction": OpaqueFunction},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
    }
    for name, attrs in modules.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    namespace: dict = {"__file__": str(launch_file), "__name__": "launch_file"}
    exec(compile(launch_file.read_text(), str(launch_file), "exec"), namespace)
    return namespace["generate_launch_description"]()


def declared(ld: LaunchDescription) -> dict[str, DeclareLaunchArgument]:
    return {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}


def nodes(ld: LaunchDescription, launch_args: dict[str, str]) -> tuple[list[Node], LaunchContext]:
    """The Node actions the description yields for `name:=value` arguments."""
    args = declared(ld)
    unknown = set(launch_args) - set(args)
    assert not unknown, f"not declared by the launch file: {unknown}"
    context = LaunchContext({name: launch_args.get(name, d.default_value) for name, d in args.items()})
    out: list[Node] = []
    for e in ld.entities:
        if isinstance(e, Node):
            out.append(e)
        elif isinstance(e, OpaqueFunction):
            out += [a for a in e.function(context, *e.args, **e.kwargs) if isinstance(a, Node)]
    return out, context


def executable(node: Node, context: LaunchContext) -> str:
    kw = node.kwargs
    name = resolve(kw["executable"], context)
    if kw.get("package") is None:
        return name
    # launch_ros' ExecutableInPackage: <prefix>/lib/<package>/<executable>.
    from ament_index_python.packages import get_package_prefix

    path = os.path.join(get_package_prefix(kw["package"]), "lib", kw["package"], name)
    assert os.access(path, os.X_OK), f"{path} is not an executable"
    return path


def resolve(value, context: LaunchContext):
    return value.perform(context) if isinstance(value, LaunchConfiguration) else value


def command(node: Node, context: LaunchContext, tmp: Path) -> list[str]:
    kw = {k: resolve(v, context) for k, v in node.kwargs.items() if k not in ("parameters", "remappings")}
    ns = "/" + (kw.get("namespace") or "").strip("/")
    full_name = ns.rstrip("/") + "/" + kw["name"]
    cmd = [executable(node, context), *[resolve(a, context) for a in kw.get("arguments", [])]]
    if kw.get("ros_arguments") is not None:
        cmd += ["--ros-args", *[resolve(a, context) for a in kw["ros_arguments"]]]
    cmd += ["--ros-args", "-r", f"__node:={kw['name']}", "-r", f"__ns:={ns}"]
    for i, p in enumerate(node.kwargs.get("parameters", [])):
        if isinstance(p, dict):
            # launch_ros reads each substituted value as YAML (so "false" is a bool), keeps
            # a plain string a string, and writes them to a file under the node's full name.
            params = {k: yaml.safe_load(v.perform(context)) if isinstance(v, LaunchConfiguration) else v for k, v in p.items()}
            path = tmp / f"inline_{i}.yaml"
            path.write_text(yaml.safe_dump({full_name: {"ros__parameters": params}}))
        else:
            path = Path(resolve(p, context))
            assert path.exists(), f"parameters file {path} is missing"
        cmd += ["--params-file", str(path)]
    for src, dst in node.kwargs.get("remappings", []):
        cmd += ["-r", f"{resolve(src, context)}:={resolve(dst, context)}"]
    return cmd


def node_command(launch_file: Path, monkeypatch, launch_args: dict[str, str], tmp: Path) -> list[str]:
    """The command line of the vla_controller node that `ros2 launch <file> name:=value...`
    starts."""
    found, context = nodes(load(launch_file, monkeypatch), launch_args)
    (node,) = [n for n in found if n.kwargs.get("name") == "vla_controller"]
    return command(node, context, tmp)
