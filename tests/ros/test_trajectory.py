"""command_type joint_trajectory on the live node: multi-point trajectories of the smoothed
plan, as joint_trajectory_controller takes them, followed by a simulated arm that
executes them as that controller does."""

from __future__ import annotations

import bisect
import time
from collections import Counter

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from vla_demo import scene as sc
from vla_demo.node_process import wait_for
from vla_demo.ros_peers import RECORDING, instruction, setup_graph, stamp_ns, status, two_sided_scene, xy_error

PERIOD_NS = 20_000_000  # control_rate_hz 50
STEP = np.array([0.05, 0.05, 0.05, 0.05, 0.05, 0.01])  # max_step_per_tick


def seconds_ns(d) -> int:
    return d.sec * 1_000_000_000 + d.nanosec


def most_common(values: list[int]) -> int:
    return Counter(values).most_common(1)[0][0]


def last_tick_before(ticks: list[int], a: int, b: int) -> int | None:
    """The stamp of the node's last control tick at or after stamp `a` and before `b`
    (`ticks`: the sorted stamps of its predicted motion, one per running tick)."""
    i = bisect.bisect_left(ticks, b) - 1
    return ticks[i] if i >= 0 and ticks[i] >= a else None


#: (horizon, control ticks between trajectories, extra arguments): the defaults (none given); one-point
#: mode, a trajectory of one point every control tick whatever the rate; 5 points at
#: 25 Hz, every 2 control ticks (trajectory_every: the control rate over the trajectory
#: rate, rounded to whole control periods).
MODES = {
    "defaults-10-points-10Hz": (10, 5, []),
    "one-point": (1, 1, ["-p", "trajectory_horizon:=1"]),
    "5-points-25Hz": (5, 2, ["-p", "trajectory_horizon:=5", "-p", "trajectory_rate_hz:=25.0"]),
}


@pytest.mark.parametrize("mode", MODES)
def test_trajectories_carry_the_plan_continuously(peers, start_node, mode):
    horizon, every, args = MODES[mode]
    s, left, right = two_sided_scene(53)
    # The stamp of every running control tick: the node publishes its predicted motion
    # at each, also between two trajectories.
    ticks: list[int] = []
    peers.node.create_subscription(JointState, "/vla_controller/predicted_joint_states",
                                   lambda m: ticks.append(stamp_ns(m.header.stamp)), RECORDING)
    cams, arm = setup_graph(peers, s, instruction(s, left), command_type=JointTrajectory)
    start_node("-p", "command_type:=joint_trajectory", *args)
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, "the arm over the item, following trajectories")
    cams.instruct(instruction(s, right))
    wait_for(lambda: xy_error(arm.position(), s, right) < 0.06, 30, "the arm over the next item")
    # Every trajectory from the first on: the way to the first item, the switch to the
    # next (a few tenths of a second at full speed) and at least 30 in all (3 s at 10 Hz).
    wait_for(lambda: len(peers.recorder.commands) >= 30, 30, "30 trajectories")
    msgs = [m for _, m in peers.recorder.commands_since(0)]

    for m in msgs:
        assert list(m.joint_names) == sc.JOINT_NAMES
        assert 1 <= len(m.points) <= horizon
        # One point per control period, from one period after the stamp on.
        assert [seconds_ns(p.time_from_start) for p in m.points] == [(k + 1) * PERIOD_NS for k in range(len(m.points))]
        for p in m.points:
            assert len(p.positions) == len(sc.JOINT_NAMES) and len(p.velocities) == 0
            assert np.all(np.array(p.positions) >= sc.JOINT_LOWER - 1e-9) and np.all(np.array(p.positions) <= sc.JOINT_UPPER + 1e-9)
        # Each point one step at most from the one before.
        q = np.array([p.positions for p in m.points])
        assert np.all(np.abs(np.diff(q, axis=0)) <= STEP + 1e-9)
    assert most_common([len(m.points) for m in msgs]) == horizon, [len(m.points) for m in msgs]

    # The stamp is the tick's time on the node's clock (here the system clock), and
    # grows; trajectories go out every `every` control ticks (measured on the stamps, not
    # on arrival: a tick the loaded machine skipped makes one interval longer).
    stamps = [stamp_ns(m.header.stamp) for m in msgs]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert abs(stamps[-1] - time.time_ns()) < 5e9
    intervals = [round((b - a) / PERIOD_NS) for a, b in zip(stamps, stamps[1:])]
    assert most_common(intervals) == every, intervals

    # Continuity: the node commands, between two trajectories, the points of the one it
    # sent last (as the controller executes them), and starts the next one step at most
    # from the command of its last tick before it. Without a skipped tick that is point
    # n - 1 of the previous trajectory (n ticks earlier); but the control timer skips
    # the ticks a loaded machine misses (tokio's MissedTickBehavior::Skip), and each
    # skipped tick before the next trajectory puts one more step between its first point
    # and point n - 1 (a bound of 2 steps from point n - 1 does not hold: two skipped
    # ticks make it 3). So the bound is one step from the point of the tick that did run
    # last, which the predicted motion's stamps name; its index k counts control periods
    # from the previous trajectory's stamp, rounded as the node rounds the tick's time
    # to its tick index, which can make it one more or less than the node's (a tick run
    # more than half a period late): the first point lies one step at most from point
    # k - 1, k or k + 1.
    wait_for(lambda: ticks and max(ticks) >= stamps[-1], 10, "the predicted motion up to the last trajectory")
    ticks = sorted(ticks)
    at_previous_tick = 0
    for a, b in zip(msgs, msgs[1:]):
        sa, sb = stamp_ns(a.header.stamp), stamp_ns(b.header.stamp)
        last = last_tick_before(ticks, sa, sb)
        k = 0 if last is None else round((last - sa) / PERIOD_NS)
        first = np.array(b.points[0].positions)
        near = [j for j in range(max(k - 1, 0), min(k + 1, len(a.points) - 1) + 1)
                if np.all(np.abs(first - np.array(a.points[j].positions)) <= STEP + 1e-9)]
        assert near, (mode, k, first, [p.positions for p in a.points])
        n = round((sb - sa) / PERIOD_NS)
        at_previous_tick += 0 <= n - 1 < len(a.points) and np.all(np.abs(first - np.array(a.points[n - 1].positions)) <= STEP + 1e-9)
    # And mostly one step from point n - 1 (no tick skipped just before): a majority,
    # not nearly all, as the skipped ticks of a loaded machine decide it (with 4 busy
    # processes on 2 cores, 24 of 29 at 25 Hz).
    assert at_previous_tick >= 0.5 * (len(msgs) - 1), f"{at_previous_tick} of {len(msgs) - 1} one step from point n - 1"


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
