"""command_type joint_trajectory on the live node: multi-point trajectories of the smoothed
plan, as joint_trajectory_controller takes them, followed by a simulated arm that
executes them as that controller does."""

from __future__ import annotations

import time

import numpy as np
from trajectory_msgs.msg import JointTrajectory

from vla_demo import scene as sc
from vla_demo.node_process import wait_for
from vla_demo.ros_peers import instruction, setup_graph, stamp_ns, status, two_sided_scene, xy_error

PERIOD_NS = 20_000_000  # control_rate_hz 50
STEP = np.array([0.05, 0.05, 0.05, 0.05, 0.05, 0.01])  # max_step_per_tick


def seconds_ns(d) -> int:
    return d.sec * 1_000_000_000 + d.nanosec


def test_trajectories_carry_the_plan_continuously(peers, start_node):
    s, left, right = two_sided_scene(53)
    cams, arm = setup_graph(peers, s, instruction(s, left), command_type=JointTrajectory)
    start_node("-p", "command_type:=joint_trajectory")  # 10 points, 10 a second
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, "the arm over the item, following trajectories")
    t0 = time.monotonic()
    cams.instruct(instruction(s, right))
    wait_for(lambda: xy_error(arm.position(), s, right) < 0.06, 30, "the arm over the next item")
    received = peers.recorder.commands_since(t0)
    msgs = [m for _, m in received]

    # About 10 a second.
    rate = (len(msgs) - 1) / (received[-1][0] - received[0][0])
    assert 8.0 <= rate <= 12.0, rate
    for m in msgs:
        assert list(m.joint_names) == sc.JOINT_NAMES
        assert 1 <= len(m.points) <= 10
        # One point per control period, from one period after the stamp on.
        assert [seconds_ns(p.time_from_start) for p in m.points] == [(k + 1) * PERIOD_NS for k in range(len(m.points))]
        for p in m.points:
            assert len(p.positions) == len(sc.JOINT_NAMES) and len(p.velocities) == 0
            assert np.all(np.array(p.positions) >= sc.JOINT_LOWER - 1e-9) and np.all(np.array(p.positions) <= sc.JOINT_UPPER + 1e-9)
        # Each point one step at most from the one before.
        q = np.array([p.positions for p in m.points])
        assert np.all(np.abs(np.diff(q, axis=0)) <= STEP + 1e-9)
    most = [len(m.points) for m in msgs]
    assert np.median(most) == 10, most

    # The stamp is the tick's time on the node's clock (here the system clock), and
    # grows; the next trajectory starts where the last one had the arm one period before.
    stamps = [stamp_ns(m.header.stamp) for m in msgs]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert abs(stamps[-1] - time.time_ns()) < 5e9
    gaps, close = [], 0
    for a, b in zip(msgs, msgs[1:]):
        n = round((stamp_ns(b.header.stamp) - stamp_ns(a.header.stamp)) / PERIOD_NS)
        assert n >= 1
        if n - 1 < len(a.points):
            gap = np.abs(np.array(b.points[0].positions) - np.array(a.points[n - 1].positions))
            gaps.append(gap)
            close += bool(np.all(gap <= STEP + 1e-9))
    # A control tick the loaded machine skipped can make it two steps, never more.
    assert gaps and all(np.all(g <= 2 * STEP + 1e-9) for g in gaps)
    assert close >= 0.9 * len(gaps), f"{close} of {len(gaps)} within one step"


def test_a_hold_replaces_the_plan_at_once(peers, start_node):
    s, left, _ = two_sided_scene(55)
    cams, arm = setup_graph(peers, s, instruction(s, left), command_type=JointTrajectory)
    start_node("-p", "command_type:=joint_trajectory")
    wait_for(lambda: status(peers) and status(peers)[1] == "running"
             and peers.recorder.commands and len(peers.recorder.commands[-1][1].points) == 10, 60, "full trajectories")
    cams.silent.add("side")
    wait_for(lambda: status(peers)[0] == 2, 5, "a hold")
    t0 = time.monotonic()
    time.sleep(0.6)
    held = [m for _, m in peers.recorder.commands_since(t0)]
    assert held and all(len(m.points) == 1 and m.points[0].positions == held[0].points[0].positions for m in held)
    at = arm.position()
    time.sleep(0.3)
    assert np.abs(arm.position() - at).max() == 0.0, "the arm holds: the plan it was executing was replaced"
