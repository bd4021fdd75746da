"""Operator controls on the live node: ~/enable, start_enabled, dry_run switched with the
parameter services, the gripper on its own topic, and the diagnostics by concern."""

from __future__ import annotations

import time

import numpy as np
from std_srvs.srv import SetBool

from vla_demo import scene as sc
from vla_demo.node_process import wait_for
from vla_demo.ros_peers import (CONTROL_RATE, START, call, diag_value, instruction, set_param, setup_graph,
                                status, two_sided_scene, xy_error)

#: max_step_per_tick of config/controller.yaml.
STEP = np.array([0.05, 0.05, 0.05, 0.05, 0.05, 0.01])


def enable(peers, on: bool) -> str:
    response = call(peers.node, SetBool, "/vla_controller/enable", SetBool.Request(data=on))
    assert response.success
    return response.message


def concern(peers, name: str):
    """(level, message, values) of the node's last status for `name` (camera sync, ...)."""
    st = peers.recorder.last_status(f"vla_controller: {name}")
    if st is None:
        return None
    level = st.level if isinstance(st.level, int) else ord(st.level)
    return level, st.message, {kv.key: kv.value for kv in st.values}


def still(peers, arm, seconds: float):
    """The commands and arm positions of the next `seconds`, after those on their way."""
    time.sleep(0.1)
    t0, q0 = time.monotonic(), arm.position()
    time.sleep(seconds)
    return peers.recorder.commands_since(t0), np.abs(arm.position() - q0).max()


def test_disabled_holds_and_enabled_resumes(peers, start_node):
    s, left, right = two_sided_scene(31)
    cams, arm = setup_graph(peers, s, instruction(s, left))
    node = start_node()
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, "the arm over the first item")

    assert enable(peers, False) == "disabled: holding position, nothing new executed"
    assert enable(peers, False) == "already disabled"
    wait_for(lambda: status(peers)[1] == "holding: disabled", 5, "the pipeline holding")
    assert concern(peers, "operator")[:2] == (1, "disabled: holding")
    assert concern(peers, "operator")[2]["enabled"] == "false"
    # A new instruction while disabled: the arm holds, commands keep coming, all one.
    cams.instruct(instruction(s, right))
    held, moved = still(peers, arm, 1.0)
    assert len(held) >= 0.8 * CONTROL_RATE and all(c == held[0][1] for _, c in held)
    assert moved == 0.0

    assert enable(peers, True) == "enabled: executing the policy's actions again"
    wait_for(lambda: xy_error(arm.position(), s, right) < 0.06, 30, "the arm over the new item")
    assert concern(peers, "operator")[:2] == (0, "enabled")
    assert "disabled: holding position" in node.output() and "enabled: executing" in node.output()


def test_start_enabled_false_waits_for_enable(peers, start_node):
    s, left, _ = two_sided_scene(33)
    cams, arm = setup_graph(peers, s, instruction(s, left))
    start_node("-p", "start_enabled:=false")
    wait_for(lambda: status(peers) and status(peers)[1] == "holding: disabled", 60, "a disabled node")
    time.sleep(1.0)
    assert peers.recorder.commands == [] and np.abs(arm.position() - START).max() == 0.0
    enable(peers, True)
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 30, "the arm over the item")


def test_dry_run_switched_while_running(peers, start_node):
    s, left, right = two_sided_scene(35)
    cams, arm = setup_graph(peers, s, instruction(s, left))
    node = start_node()
    wait_for(lambda: status(peers) and status(peers)[1] == "running", 60, "the node running")

    assert set_param(peers.node, "dry_run", True).successful
    wait_for(lambda: concern(peers, "operator")[1].startswith("dry run"), 5, "dry run in /diagnostics")
    assert concern(peers, "operator")[2]["dry_run"] == "true"
    cams.instruct(instruction(s, right))
    sent, moved = still(peers, arm, 1.0)
    assert sent == [] and moved == 0.0, "a dry run commands nothing"
    assert status(peers)[1] == "running", "but computes"

    # Back on: the first command is one step at most from where the arm is.
    at = arm.position()
    t0 = time.monotonic()
    assert set_param(peers.node, "dry_run", False).successful
    first = wait_for(lambda: peers.recorder.commands_since(t0), 5, "commands again")[0][1]
    assert np.all(np.abs(np.array(first) - at) <= STEP + 1e-9), (first, at)
    wait_for(lambda: xy_error(arm.position(), s, right) < 0.06, 30, "the arm over the new item")
    out = node.output()
    assert "dry_run on" in out and "dry_run off" in out


def test_gripper_on_its_own_topic(peers, start_node):
    s, left, _ = two_sided_scene(37)
    cams, arm = setup_graph(peers, s, instruction(s, left), gripper_topic="gripper_commands")
    start_node("-p", "gripper_joints:=[gripper]")
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, "the arm over the item")
    t0 = time.monotonic()
    time.sleep(1.0)
    arm_cmds = peers.recorder.commands_since(t0)
    with peers.recorder.lock:
        grip = [g for t, g in peers.recorder.gripper if t >= t0]
    assert arm_cmds and all(len(c) == len(sc.JOINT_NAMES) - 1 for _, c in arm_cmds)
    assert len(grip) >= 0.8 * CONTROL_RATE, "the gripper's command every control tick"
    # Within the gripper's own limits (its entry of the joint limits).
    assert all(len(g) == 1 and sc.JOINT_LOWER[5] <= g[0] <= sc.JOINT_UPPER[5] for g in grip)


def test_gripper_clamped_at_its_own_limit_and_the_arm_not(peers, start_node):
    s, left, _ = two_sided_scene(37)
    # The policy keeps the gripper open (0.04); its own limit lets it open 0.02 at most.
    # The arm joints keep the parameters file's limits.
    upper = [float(v) for v in sc.JOINT_UPPER[:5]] + [0.02]
    cams, arm = setup_graph(peers, s, instruction(s, left), gripper_topic="gripper_commands")
    start_node("-p", "gripper_joints:=[gripper]", "-p", f"joint_upper_limits:={upper}")
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, "the arm over the item, the gripper held")
    t0 = time.monotonic()
    time.sleep(1.0)
    with peers.recorder.lock:
        grip = [g for _, g in peers.recorder.gripper]
        recent = [g for t, g in peers.recorder.gripper if t >= t0]
    arm_cmds = peers.recorder.commands_since(0)
    assert grip and all(len(g) == 1 and sc.JOINT_LOWER[5] <= g[0] <= 0.02 for g in grip), grip
    # From the first command on (the arm reported it open at 0.04, two steps of 0.01 above
    # the limit): the position limit applies after the step, at the limit at once.
    assert grip[0][0] == 0.02 and recent and all(g[0] == 0.02 for g in recent), "pressed against its limit"
    assert arm.position()[5] == 0.02
    # The arm: its five joints, one step a tick at most, within their own limits, and it
    # reached the item (above).
    q = np.array([c for _, c in arm_cmds])
    assert q.shape[1] == len(sc.JOINT_NAMES) - 1
    assert np.all(q >= sc.JOINT_LOWER[:5] - 1e-9) and np.all(q <= sc.JOINT_UPPER[:5] + 1e-9)
    assert np.all(np.abs(np.diff(q, axis=0)) <= STEP[:5] + 1e-9)


def test_diagnostics_by_concern_with_thresholds_from_the_parameters(peers, start_node):
    s, left, _ = two_sided_scene(39)
    cams, arm = setup_graph(peers, s, instruction(s, left))
    # Cameras run at 30 Hz with 4 ms of stamp jitter: these thresholds must warn.
    start_node("-p", "diagnostics_camera_rate_warn_hz:=40.0", "-p", "diagnostics_spread_warn_s:=0.0001")
    wait_for(lambda: concern(peers, "inference") and int(concern(peers, "inference")[2]["inferences in window"]) > 10,
             60, "inferences in the window")
    # The rates the peers really sent over a whole window (on a loaded machine the
    # simulated arm's 100 Hz timer falls behind, and the node must say so).
    t0, sent0, joints0 = time.monotonic(), dict(cams.sent), arm.sent
    time.sleep(5.5)
    dt = time.monotonic() - t0
    level, message, v = concern(peers, "input rates")
    assert level == 1 and "camera/main/image_raw" in message, message
    for cam in sc.CAMERA_NAMES:
        sent = (cams.sent[cam] - sent0[cam]) / dt
        assert abs(float(v[f"camera/{cam}/image_raw (Hz)"]) - sent) <= 0.15 * sent, (v, sent)
    sent = (arm.sent - joints0) / dt
    assert abs(float(v["joint_states (Hz)"]) - sent) <= 0.15 * sent, (v, sent)

    level, message, v = concern(peers, "camera sync")
    assert level == 1 and "warn above 0.10 ms" in message, message
    p50, p99, mx = (float(v[f"stamp spread {k} (ms)"]) for k in ("p50", "p99", "max"))
    assert 0.0 <= p50 <= p99 <= mx <= 20.0, v  # never beyond sync_max_interval_s
    assert int(v["sets in window"]) > 100

    level, message, v = concern(peers, "inference")
    assert level == 0 and 0 < float(v["latency p50 (ms)"]) <= float(v["latency p99 (ms)"]), (message, v)
    level, message, v = concern(peers, "memory")
    used, held, resident = (float(v[k]) for k in ("heap_in_use_mib", "heap_held_mib", "resident_mib"))
    assert level == 0 and message.startswith("resident ") and 0 < used <= held and resident > 100, (message, v)
    # The pipeline's status and its keys are as before, first in the array.
    assert status(peers) == (0, "running")
    assert int(diag_value(peers, "inferences")) > 10
