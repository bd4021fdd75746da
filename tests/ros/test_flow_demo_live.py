"""The flow-matching demo policy (policy/flow_demo_policy.pt) on a live graph with
real-time chunking: the node integrates each chunk from seeded noise, infers when the
running chunk is down to its horizon, and the simulated arm follows an English and
then a Chinese instruction."""

from __future__ import annotations

from vla_demo.node_process import FLOW_DEMO_POLICY, wait_for
from vla_demo.ros_peers import diag_value, instruction, setup_graph, status, two_sided_scene, xy_error


def test_flow_demo_policy_with_rtc_follows_instructions(peers, start_node):
    s, left, right = two_sided_scene()
    cams, arm = setup_graph(peers, s, instruction(s, left))
    start_node("-p", f"policy_path:={FLOW_DEMO_POLICY}", "-p", "smoothing:=rtc",
               "-p", "explanation_method:=policy_attention")
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, f"the arm over item {left}")
    cams.instruct(instruction(s, right, "zh", "pick"))
    wait_for(lambda: xy_error(arm.position(), s, right) < 0.06, 30, f"the arm over item {right}")
    # Counters from the node's next diagnostics (1 Hz).
    wait_for(lambda: int(diag_value(peers, "rtc_waits") or 0) > 10, 10, "sets waited for the horizon")
    assert status(peers)[0] == 0, status(peers)
    assert int(diag_value(peers, "inference_errors") or 0) == 0
    assert 0 < int(diag_value(peers, "inferences")) < int(diag_value(peers, "observations")) / 2
