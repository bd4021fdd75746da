"""A LeRobot ACT policy, exported with `python -m vla_export.lerobot`, drives the simulated
arm on a live graph: one camera, no instruction topic, the robot's joint names mapped to
the SO-101 names the policy was trained on."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures import LIVE_TOP, LIVE_TOP_EXPORT, SIM_NAME_MAP, SIM_REST, make_act_run
from vla_export import lerobot as ex
from vla_demo import scene as sc
from vla_demo.node_process import wait_for
from vla_demo.ros_peers import diag_value, setup_graph, status, two_sided_scene


@pytest.fixture(scope="module")
def act_top(tmp_path_factory):
    root = tmp_path_factory.mktemp("act_top")
    trained = make_act_run(root, LIVE_TOP)
    return ex.export(trained.checkpoint, ex.Options(output=root / "act_top.pt", **LIVE_TOP_EXPORT)).metadata, root / "act_top.pt"


def test_act_drives_the_arm_from_one_camera_without_instruction(peers, start_node, act_top):
    meta, policy = act_top
    assert [c["name"] for c in meta["cameras"]] == ["top"] and meta["tokenizer"] is None
    s, _, _ = two_sided_scene(9)
    setup_graph(peers, s, None, cameras=("top",))
    names = ",".join(f"'{robot}:{policy_name}'" for robot, policy_name in SIM_NAME_MAP.items())
    node = start_node("-p", f"policy_path:={policy}", "-p", "camera_names:=[top]",
                      "-p", f"control_rate_hz:={meta['control_rate_hz']}", "-p", f"joint_name_map:=[{names}]",
                      "-p", "explanation_method:=occlusion", "-p", "explain_rate_hz:=1.0")
    wait_for(lambda: len(peers.recorder.commands) > 60, 90, "commands from the ACT policy")
    wait_for(lambda: (status(peers) or (None, ""))[1] == "running", 10, "running")
    assert "the policy takes no instruction" in node.output()
    cmds = np.array([c for _, c in peers.recorder.commands[-30:]])
    assert np.all(cmds >= sc.JOINT_LOWER - 1e-9) and np.all(cmds <= sc.JOINT_UPPER + 1e-9)
    # Its actions were trained around the rest pose (std 0.05): the arm stays near it.
    assert np.abs(cmds - np.array(SIM_REST)).max() < 0.5
    wait_for(lambda: int(diag_value(peers, "inferences") or 0) > 20, 10, "inferences counted")
    assert int(diag_value(peers, "inference_errors") or 0) == 0
