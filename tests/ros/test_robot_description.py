"""Joint limits from the robot description on the live node: the URDF of the simulated
arm as a parameter and on the transient-local topic robot_state_publisher serves, the
parameters file only tightening it, and the start-up errors of a mismatch."""

from __future__ import annotations

import numpy as np
from std_msgs.msg import String

from vla_demo import scene as sc
from vla_demo.node_process import wait_for
from vla_demo.ros_peers import LATCHED, instruction, setup_graph, two_sided_scene, xy_error
from vla_demo.urdf import VELOCITY, arm_urdf

PERIOD_S = 1 / 50


def urdf_params(tmp_path, urdf: str, source: str = "parameter") -> list[str]:
    """`--params-file` arguments of a file giving the URDF, as a launch file passes
    xacro's output (a YAML block scalar)."""
    body = "".join(f"      {line}\n" for line in urdf.splitlines())
    path = tmp_path / "robot_description.yaml"
    path.write_text(f"/**:\n  ros__parameters:\n    robot_description_source: \"{source}\"\n"
                    f"    robot_description: |\n{body}")
    return ["--params-file", str(path)]


def steps(commands) -> np.ndarray:
    q = np.array([c for _, c in commands])
    return np.abs(np.diff(q, axis=0)).max(axis=0)


def test_limits_from_the_urdf_parameter_tightened_by_nothing_looser(peers, start_node, tmp_path):
    s, left, _ = two_sided_scene(57)
    pan = np.arctan2(s.items[left].y, s.items[left].x)
    upper = sc.JOINT_UPPER.copy()
    upper[0] = 0.1  # shoulder_pan stops short of the item (at pan {pan:.2f})
    velocity = [1.0, 1.0, 1.0, 1.0, 1.0, 0.5]  # 0.02 rad per tick, below the file's 0.05
    cams, arm = setup_graph(peers, s, instruction(s, left))
    node = start_node(*urdf_params(tmp_path, arm_urdf(upper=upper, velocity=velocity)))
    wait_for(lambda: len(peers.recorder.commands) > 150, 60, "three seconds of commands")
    assert pan > 0.2
    cmds = peers.recorder.commands_since(0)
    q = np.array([c for _, c in cmds])
    assert q[:, 0].max() <= 0.1 + 1e-12 and q[-1, 0] == 0.1, "the URDF's limit, not the file's 1.6"
    assert np.all(steps(cmds)[:5] <= 0.02 + 1e-9), steps(cmds)
    out = node.output()
    assert "joint limits from the robot description" in out
    assert "joint_upper_limits[shoulder_pan] = 1.6 (robot description: 0.1): looser" in out
    assert "max_step_per_tick[elbow] = 0.05 (robot description: 0.02): looser" in out


def test_tighter_values_of_the_parameters_file_apply_over_the_urdf(peers, start_node, tmp_path):
    s, left, _ = two_sided_scene(57)
    pan = np.arctan2(s.items[left].y, s.items[left].x)
    assert pan > 0.2
    # The URDF: the simulated arm's limits (steps of 0.05 rad a tick), but for a slower
    # shoulder_lift (0.02 rad a tick). The parameters file tightens shoulder_pan's upper
    # limit (0.1, short of the item) and elbow's step (0.02), and gives the rest as loose
    # as the URDF or looser.
    velocity = [2.5, 1.0, 2.5, 2.5, 2.5, 0.5]
    upper = [0.1, 2.6, 0.0, 0.4, 1.0, 0.06]
    step = [0.05, 0.05, 0.02, 0.05, 0.05, 0.01]
    cams, arm = setup_graph(peers, s, instruction(s, left))
    node = start_node(*urdf_params(tmp_path, arm_urdf(velocity=velocity)),
                      "-p", f"joint_upper_limits:={upper}", "-p", f"max_step_per_tick:={step}")
    wait_for(lambda: len(peers.recorder.commands) > 150, 60, "three seconds of commands")
    cmds = peers.recorder.commands_since(0)
    q = np.array([c for _, c in cmds])
    assert q[:, 0].max() <= 0.1 + 1e-12 and q[-1, 0] == 0.1, "the file's tighter limit, not the URDF's 1.6"
    taken = steps(cmds)
    # The largest step of each joint, which the way from the start pose to the item reaches:
    # shoulder_lift at the URDF's 0.02, elbow at the file's 0.02, shoulder_pan at the 0.05
    # both give.
    assert np.allclose(taken[:3], [0.05, 0.02, 0.02], rtol=0, atol=1e-9), taken
    out = node.output()
    assert "joint_upper_limits[shoulder_pan] = 0.1 (robot description: 1.6): tightened by the parameters file" in out
    assert "max_step_per_tick[elbow] = 0.02 (robot description: 0.05): tightened by the parameters file" in out
    assert "max_step_per_tick[shoulder_lift] = 0.05 (robot description: 0.02): looser" in out
    assert "shoulder_pan [-1.6, 0.1] step 0.05" in out and "elbow [-3.1, 0] step 0.02" in out


def test_limits_from_the_robot_description_topic(peers, start_node, tmp_path):
    s, left, _ = two_sided_scene(59)
    velocity = [1.0, 1.0, 1.0, 1.0, 1.0, 0.5]
    # As robot_state_publisher: transient local, published before the node starts.
    pub = peers.node.create_publisher(String, "robot_description", LATCHED)
    pub.publish(String(data=arm_urdf(velocity=velocity)))
    cams, arm = setup_graph(peers, s, instruction(s, left))
    node = start_node("-p", "robot_description_source:=topic")
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 90, "the arm over the item")
    assert np.all(steps(peers.recorder.commands_since(0))[:5] <= 0.02 + 1e-9)
    assert "joint limits from the robot description" in node.output()


def test_a_urdf_without_a_commanded_joint_stops_the_node(start_node, tmp_path):
    urdf = arm_urdf(joints=[j for j in sc.JOINT_NAMES if j != "elbow"])
    node = start_node(*urdf_params(tmp_path, urdf))
    assert node.wait_exit(60) != 0
    out = node.output()
    assert "robot_description does not match joint_names" in out, out
    assert "joint `elbow` is not in the robot description" in out
    assert "movable joints: camera_tilt, gripper, shoulder_lift, shoulder_pan, wrist_pitch, wrist_roll" in out


def test_no_robot_description_on_the_topic_stops_the_node(start_node):
    node = start_node("-p", "robot_description_source:=topic", "-p", "robot_description_timeout_s:=1.0")
    assert node.wait_exit(60) != 0
    assert "no robot description on `robot_description` within robot_description_timeout_s (1 s)" in node.output()


def test_the_urdf_holds_the_simulated_arms_limits():
    import xml.etree.ElementTree as ET

    joints = {j.get("name"): j for j in ET.fromstring(arm_urdf()).iter("joint")}
    for i, name in enumerate(sc.JOINT_NAMES):
        limit = joints[name].find("limit")
        assert float(limit.get("lower")) == sc.JOINT_LOWER[i] and float(limit.get("upper")) == sc.JOINT_UPPER[i]
        assert float(limit.get("velocity")) == VELOCITY[i]
    assert joints["camera_tilt"].get("type") == "revolute"
