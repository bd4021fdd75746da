"""Real-time chunking on a live graph, with each chunk handed over 100 ms late (the
test-only `test_added_inference_delay_s`): a flow-matching policy whose chunk ramps from
the state it saw towards a goal drives the simulated arm there; the node infers only
when the running chunk is down to its execution horizon, and the plan stays continuous
where chunks meet, where executing each new chunk as it is (`smoothing: none`) jumps."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sensor_msgs.msg import JointState

from vla_demo import contract_policies as cp
from vla_demo import scene as sc
from vla_demo.node_process import wait_for
from vla_demo.ros_peers import START, diag_value, setup_graph, two_sided_scene

GOAL = [0.3, 1.0, -1.5, -0.7, 0.2, 0.02]


@pytest.fixture(scope="module")
def ramp_policy(tmp_path_factory):
    meta = cp.flow_metadata([cp.camera("main", 64, 48)], list(sc.JOINT_NAMES), chunk_length=25)
    return cp.save(cp.RampFlow(meta, GOAL, tau=8.0), tmp_path_factory.mktemp("rtc") / "ramp.pt")


class Plan:
    """The predicted targets the node publishes (the plan the smoother executes, before
    the safety filter), tick by tick."""

    def __init__(self, peers):
        self.lock, self.targets = threading.Lock(), []
        peers.node.create_subscription(JointState, "/vla_controller/predicted_joint_states", self._on, 50)

    def _on(self, msg):
        with self.lock:
            self.targets.append(list(msg.position))

    def take(self) -> np.ndarray:
        with self.lock:
            out, self.targets = np.array(self.targets), []
        return out


def start(start_node, policy, smoothing: str):
    return start_node("-p", f"policy_path:={policy}", "-p", "camera_names:=[main]", "-p", f"smoothing:={smoothing}",
                      "-p", "test_added_inference_delay_s:=0.1", "-p", "rtc_execution_horizon:=10",
                      "-p", "explanation_method:=occlusion", "-p", "explain_rate_hz:=1.0")


def test_rtc_reaches_the_goal_inferring_at_the_horizon(peers, start_node, ramp_policy):
    s, _, _ = two_sided_scene(3)
    _, arm = setup_graph(peers, s, None, cameras=("main",))
    start(start_node, ramp_policy, "rtc")
    wait_for(lambda: np.abs(arm.position() - GOAL).max() < 0.01, 30, "the arm at the goal")
    wait_for(lambda: int(diag_value(peers, "rtc_waits") or 0) > 10, 10, "sets waited for the horizon")
    inferences = int(diag_value(peers, "inferences"))
    sets = int(diag_value(peers, "observations"))
    assert 0 < inferences < sets / 2, (inferences, sets)
    assert int(diag_value(peers, "inference_errors") or 0) == 0


def largest_step(targets: np.ndarray) -> float:
    """The largest change of the planned target from one tick to the next."""
    return float(np.abs(np.diff(targets, axis=0)).max())


def test_rtc_keeps_the_plan_continuous_where_none_jumps(peers, start_node, ramp_policy):
    s, _, _ = two_sided_scene(3)
    _, arm = setup_graph(peers, s, None, cameras=("main",))
    plan = Plan(peers)
    steps = {}
    for smoothing in ("rtc", "none"):
        arm.q[:] = START
        node = start(start_node, ramp_policy, smoothing)
        wait_for(lambda: np.abs(arm.position() - GOAL).max() < 0.01, 30, f"the goal ({smoothing})")
        node.stop()
        steps[smoothing] = largest_step(plan.take())
    print(steps)
    assert steps["rtc"] < steps["none"], steps
