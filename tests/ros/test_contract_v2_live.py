"""Contract version 2 on a live graph: cameras of different sizes, each resized by its own
mode (one of them at any size, one at the size the policy expects, the others rejected
and counted with the policy's reason); an explanation the policy cannot give refused at
start-up and at run time."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import Image

from vla_demo import contract_policies as cp
from vla_demo import scene as sc
from vla_demo.node_process import wait_for
from vla_demo.ros_peers import diag_value, set_param, setup_graph, status, two_sided_scene

SIZES = {"main": (640, 480), "top": (1280, 720)}


@pytest.fixture
def mixed_policy(tmp_path):
    """`main` expected at 640x480 and averaged down to 128x96; `top` at any size,
    letterboxed into 96x96; no language, no attention maps."""
    cams = [cp.camera("main", 128, 96, "area", SIZES["main"]), cp.camera("top", 96, 96, "letterbox")]
    meta = cp.metadata(cams, list(sc.JOINT_NAMES), patch_grid=(6, 8))
    return cp.save(cp.MeanColour(meta, gain=0.02), tmp_path / "mixed.pt")


def test_cameras_of_their_own_sizes_drive_the_arm(peers, start_node, mixed_policy):
    s, _, _ = two_sided_scene(5)
    seen = {"top": 0, "language": 0}
    for topic in seen:
        peers.node.create_subscription(Image, f"/vla_controller/attention/{topic}", lambda _, t=topic: seen.__setitem__(t, seen[t] + 1), 5)
    cams, arm = setup_graph(peers, s, None, cameras=("main", "top"), sizes=SIZES)
    start_node("-p", f"policy_path:={mixed_policy}", "-p", "camera_names:=[main,top]",
               "-p", "explanation_method:=occlusion", "-p", "explain_rate_hz:=2.0")
    wait_for(lambda: len(peers.recorder.commands) > 50, 60, "commands from two cameras of different sizes")
    assert status(peers)[1] == "running"
    used = lambda cam: int(diag_value(peers, f"used/camera/{cam}/image_raw") or 0)  # noqa: E731
    # Diagnostics come once a second: wait for them to count both cameras.
    wait_for(lambda: used("main") > 20 and used("top") > 20, 10, "both cameras' frames used")
    # The policy's own numbers: near the start pose, never outside the limits.
    q = np.array(peers.recorder.commands[-1][1])
    assert np.all(q >= sc.JOINT_LOWER - 1e-9) and np.all(q <= sc.JOINT_UPPER + 1e-9)
    # Occlusion overlays of each camera; no language heatmap for a policy without language.
    wait_for(lambda: seen["top"] > 0, 60, "an occlusion overlay of the letterboxed camera")
    assert seen["language"] == 0

    # The main camera switches to 320x240: every frame is rejected with the policy's
    # reason, the node holds, and the other camera stays accepted.
    cams.sizes["main"] = (320, 240)
    cams.set_scene(s)
    key = "rejected/camera/main/image_raw/image size differs from the policy's expected size"
    wait_for(lambda: int(diag_value(peers, key) or 0) > 10, 20, "main rejected for its size")
    wait_for(lambda: status(peers)[0] == 2 and "camera/main/image_raw went silent" in status(peers)[1], 10, "a hold")


def test_an_explanation_the_policy_cannot_give_is_refused(peers, start_node, mixed_policy):
    node = start_node("-p", f"policy_path:={mixed_policy}", "-p", "camera_names:=[main,top]",
                      "-p", "explanation_method:=policy_attention")
    assert node.wait_exit(60) != 0
    assert "policy_attention needs the policy's patch_maps" in node.output()

    s, _, _ = two_sided_scene(5)
    setup_graph(peers, s, None, cameras=("main", "top"), sizes=SIZES)
    node = start_node("-p", f"policy_path:={mixed_policy}", "-p", "camera_names:=[main,top]")
    wait_for(lambda: len(peers.recorder.commands) > 5, 60, "commands")
    refused = set_param(peers.node, "explanation_method", "policy_attention")
    assert not refused.successful and "patch_maps" in refused.reason
    assert set_param(peers.node, "attention_threshold", 0.5).successful
