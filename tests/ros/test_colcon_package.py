"""README's "On a robot" section, command by command: colcon builds the package in a fresh
temporary workspace against this repository's ROS prefix (standing in for
/opt/ros/<distro>), and the installed node, started through the installed launch file's
command line and through `ros2 run`'s, drives the simulated arm.

What stands in for what a robot has and this machine has not:
- `source /opt/ros/<distro>/setup.bash`: scripts/ros_prefix.sh (the ros-kilted-* wheels
  in .venv), with ROS_DISTRO set to <distro> as that distribution's setup.bash sets it;
- `sudo apt install ...`: each package must be installed here already, from apt or, for
  colcon, as its PyPI distribution in .venv (the set-up installs both);
- `pip install --user --break-system-packages ...`: `pip install ...` into .venv;
- `git clone <url> src/vla_controller`: a link to this checkout (its working tree);
- `~/ros2_ws`: the temporary workspace;
- `ros2 launch` and `ros2 run` (not on PyPI): the node's command line as they build it
  (launch_standin.py for the launch file; <prefix>/lib/<package>/<executable> for run).

The workspace's build/vla_controller is a link to this checkout's target/, so that colcon's
cargo reuses what `make build` compiled (only r2r's bindings and the node itself are
compiled again, for the workspace's AMENT_PREFIX_PATH)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import yaml
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Float64MultiArray
from vla_demo import launch_standin as ls
from vla_demo.node_process import ROOT, wait_for
from vla_demo.ros_peers import RELIABLE, START, ScenePublisher, SimArm, instruction, two_sided_scene, xy_error

README = ROOT / "README.md"
VENV = ROOT / ".venv"
# Debian packages of the README whose Python distribution the set-up installs into .venv
# instead (apt has them only from the ROS repositories).
FROM_PYPI = {"python3-colcon-common-extensions": "colcon-common-extensions", "python3-pip": "pip"}


def robot_policy(ws: Path) -> Path:
    """The robot's own policy that its parameters file names: a copy of the installed demo
    policy at a path of its own, so that the launch file's demo policy cannot pass for it."""
    return ws / "robot" / "my_policy.pt"


def robot_section_commands() -> list[str]:
    """Every command of README's "On a robot" section, in order: continued lines joined,
    comments and blank lines left out."""
    text = README.read_text()
    section = text[text.index("## On a robot"):]
    section = section[: section.index("\n## ", 1)]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def check_apt(packages: list[str]) -> None:
    for pkg in packages:
        if pkg in FROM_PYPI:
            r = subprocess.run([VENV / "bin" / "pip", "show", "-q", FROM_PYPI[pkg]], capture_output=True)
        else:
            r = subprocess.run(["dpkg", "-s", pkg], capture_output=True)
        assert r.returncode == 0, f"{pkg} (from the README's apt line) is not installed here"


def stand_in(command: str, ws: Path) -> str:
    """The command as it runs here (see the module's docstring)."""
    command = command.replace("~/ros2_ws", str(ws))
    words = shlex.split(command)
    if words[:3] in (["sudo", "apt", "install"], ["sudo", "apt-get", "install"]):
        check_apt([w for w in words[3:] if not w.startswith("-")])
        return "true"
    if words[:2] == ["pip", "install"]:
        args = [w for w in words[2:] if w not in ("--user", "--break-system-packages")]
        return shlex.join([str(VENV / "bin" / "pip"), "install", "-q", *args])
    m = re.fullmatch(r"source /opt/ros/(\w+)/setup\.bash", command)
    if m:
        return f"source {shlex.quote(str(ROOT / 'scripts' / 'ros_prefix.sh'))} && export ROS_DISTRO={m[1]}"
    if words[:2] == ["git", "clone"]:
        return f"ln -s {shlex.quote(str(ROOT))} {shlex.quote(words[-1])}"
    if words[:2] == ["colcon", "build"]:
        # Share the checkout's cargo target directory (see the module's docstring).
        target = shlex.quote(str(ROOT / "target"))
        return f"mkdir -p build && ln -sfn {target} build/vla_controller && SECONDS=0 && {command} && echo \"colcon build: $SECONDS s\""
    return command


def robot_environment() -> dict[str, str]:
    """A shell as a robot engineer opens one: none of scripts/env.sh's settings, only the
    user's tools (cargo) on PATH, and the ROS graph of these tests."""
    keep = ("HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "CARGO_HOME", "RUSTUP_HOME", "ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if str(ROOT) not in p and ".venv" not in p)
    return env


def run_readme(ws: Path) -> list[tuple[list[str], dict[str, str]]]:
    """Runs the section's commands in one bash, as typed into one shell. Each `ros2`
    command is recorded instead, with its arguments as the shell expanded them and the
    environment it had; they are returned in order."""
    record = ws.parent / "ros2_calls"
    record.mkdir()
    lines = [
        "set -eo pipefail",
        "n=0",
        f'ros2() {{ n=$((n+1)); printf "%s\\0" "$@" > {record}/$n.args; env -0 > {record}/$n.env; }}',
    ]
    for command in robot_section_commands():
        lines += [f"echo {shlex.quote('+ ' + command)}", stand_in(command, ws)]
        if command.startswith("cp ") and command.endswith("my_robot.yaml"):
            # The edit the README asks for: the robot's own policy (here a copy of the
            # installed demo policy elsewhere, by its absolute path), and a launch-
            # overridable parameter away from its default (use_sim_time, which the test
            # serves with /clock).
            policy = robot_policy(ws)
            demo = ws / "install" / "vla_controller" / "share" / "vla_controller" / "policy" / "demo_policy.pt"
            lines.append(f"mkdir -p {shlex.quote(str(policy.parent))} && cp {shlex.quote(str(demo))} {shlex.quote(str(policy))}")
            lines.append(f"sed -i 's#^\\( *\\)policy_path: \"policy/demo_policy.pt\"$#\\1policy_path: \"{policy}\"\\n\\1use_sim_time: true#' my_robot.yaml")
    script = ws.parent / "readme.sh"
    script.write_text("\n".join(lines) + "\n")
    log = ws.parent / "readme.log"
    with open(log, "w") as out:
        r = subprocess.run(["bash", str(script)], cwd=ws.parent, env=robot_environment(), stdout=out, stderr=subprocess.STDOUT, timeout=2400)
    print(log.read_text()[-3000:])
    assert r.returncode == 0, f"README's commands failed; the end of {log}:\n{log.read_text()[-6000:]}"
    built = re.findall(r"^colcon build: \d+ s$", log.read_text(), re.M)
    assert built, f"no colcon build time in {log}"
    print(built[-1])
    calls = []
    for args in sorted(record.glob("*.args"), key=lambda p: int(p.stem)):
        argv = args.read_bytes().split(b"\0")[:-1]
        env = dict(kv.split("=", 1) for kv in args.with_suffix(".env").read_text().split("\0") if "=" in kv)
        calls.append(([a.decode() for a in argv], env))
    return calls


def check_install_layout(ws: Path) -> None:
    prefix = ws / "install" / "vla_controller"
    binary = prefix / "lib" / "vla_controller" / "vla_controller"
    assert os.access(binary, os.X_OK), f"{binary} is missing"
    share = prefix / "share" / "vla_controller"
    for f in ("package.xml", "launch/vla_controller.launch.py", "config/controller.yaml", "config/fastdds.xml",
              "rviz/vla_controller.rviz", "policy/demo_policy.pt"):
        assert (share / f).is_file(), f"{share / f} is missing"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "vla_controller").exists()
    assert (ws / "install" / "vla_controller_msgs" / "share" / "vla_controller_msgs" / "package.xml").is_file()


def ros2_command(argv: list[str], env: dict[str, str], ws: Path, monkeypatch, run_dir: Path) -> tuple[list[str], str]:
    """The node's command line for `ros2 launch <package> <file> args` or `ros2 run
    <package> <executable> args`, and the topic its commands go to."""
    verb, package, name, *rest = argv
    assert package == "vla_controller"
    monkeypatch.setenv("AMENT_PREFIX_PATH", env["AMENT_PREFIX_PATH"])
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    if verb == "launch":
        launch_file = Path(get_package_share_directory(package)) / "launch" / name
        launch_args = dict(a.split(":=", 1) for a in rest)
        cmd = ls.node_command(launch_file, monkeypatch, launch_args, run_dir)
        assert cmd[0] == str(ws / "install" / "vla_controller" / "lib" / "vla_controller" / "vla_controller")
        return cmd, launch_args.get("command_topic", "joint_commands")
    assert verb == "run" and name == "vla_controller"
    cmd = [os.path.join(get_package_prefix(package), "lib", package, name), *rest]
    topic = next((a.split(":=", 1)[1] for a in rest if a.startswith("joint_commands:=")), "joint_commands")
    return cmd, topic


def test_the_readme_robot_steps_build_install_and_run_the_package(peers, monkeypatch, tmp_path):
    commands = robot_section_commands()
    # The Kilted workaround and the optional bindings filter are the ones this
    # repository's own environment uses.
    env_sh = (ROOT / "scripts" / "env.sh").read_text()
    filters = [c for c in commands if c.startswith("export IDL_PACKAGE_FILTER=")]
    assert filters and filters[0].split("=", 1)[1] in env_sh
    assert "export ROS_DISTRO=jazzy" in commands and "source /opt/ros/jazzy/setup.bash" in commands

    ws = tmp_path / "ros2_ws"
    calls = run_readme(ws)
    check_install_layout(ws)
    # The robot's parameters file names its own policy and sim time (see run_readme).
    robot = yaml.safe_load((ws / "my_robot.yaml").read_text())["/**"]["ros__parameters"]
    assert robot["policy_path"] == str(robot_policy(ws)) and robot["use_sim_time"] is True, robot
    assert robot_policy(ws).is_file()
    assert [c[0][0] for c in calls] == ["launch", "launch", "run"], [c[0] for c in calls]
    for _, env in calls:
        # The workspace's own interface package, never this checkout's msg/install.
        for var in ("AMENT_PREFIX_PATH", "LD_LIBRARY_PATH", "PYTHONPATH"):
            assert str(ROOT / "msg" / "install") not in env.get(var, ""), (var, env.get(var))
        assert str(ws / "install" / "vla_controller_msgs") in env["AMENT_PREFIX_PATH"]

    s, left, right = two_sided_scene(5)
    cams = ScenePublisher(peers.node, s)
    arm = SimArm(peers.node, START)
    # /clock for the runs with the robot's file (use_sim_time): the peers' own time.
    clock = peers.node.create_publisher(Clock, "/clock", RELIABLE)
    peers.node.create_timer(0.01, lambda: clock.publish(Clock(clock=peers.node.get_clock().now().to_msg())))
    peers.start()
    targets = [left, right, left]
    for k, ((argv, env), item) in enumerate(zip(calls, targets)):
        run_dir = tmp_path / f"ros2_{k}"
        run_dir.mkdir()
        cmd, topic = ros2_command(argv, env, ws, monkeypatch, run_dir)
        if topic != "joint_commands":
            peers.node.create_subscription(Float64MultiArray, topic, arm._on_command, RELIABLE)
        with arm.lock:
            arm.q = START.copy()
        cams.instruct(instruction(s, item))
        log = run_dir / "node.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: xy_error(arm.position(), s, item) < 0.06 or proc.poll() is not None, 90,
                     f"`ros2 {' '.join(argv)}` to move the arm")
            assert proc.poll() is None, f"`ros2 {' '.join(argv)}` exited:\n{log.read_text()[-3000:]}"
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=15)
        assert proc.returncode == 0, log.read_text()[-3000:]
        out = log.read_text()
        assert "vla_controller running" in out and "[vla_controller]: " in out, out[-3000:]
        # Each run's policy: with the bundled parameters, the installed demo policy;
        # with the robot's, exactly the policy its file names (the launch file must not
        # put the demo policy in its place), and its sim time. Never a path into the
        # checkout.
        demo = ws / "install" / "vla_controller" / "share" / "vla_controller" / "policy" / "demo_policy.pt"
        robots = any(a.endswith("my_robot.yaml") for a in argv)
        loaded = next(l for l in out.splitlines() if "policy loaded and checked" in l)
        reported = re.search(r"\bpath=(\S+)", loaded)
        assert reported and reported[1] == str(robot_policy(ws) if robots else demo), (argv, loaded)
        assert ("use_sim_time: following /clock" in out) == robots, (argv, out[-3000:])
        if robots:
            assert str(demo) not in out, (argv, out[-3000:])
