"""Faults the node must survive: a policy that returns NaN or throws, a camera publisher
that restarts."""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from vla_demo.node_process import ROOT, wait_for
from vla_demo.ros_peers import diag_value, instruction, setup_graph, status, two_sided_scene, xy_error
from sensor_msgs.msg import Image
from vla_demo.ros_peers import RELIABLE


class Faulty(torch.nn.Module):
    """The demo policy, except that it returns NaN actions when the instruction holds
    `!`, raises when it holds `?`, and raises from its 31st call on with an instruction
    holding `;` (a failure that comes while the task is under way)."""

    def __init__(self, inner, nan_id: int, raise_id: int, later_id: int):
        super().__init__()
        self.inner = inner
        self.nan_id = nan_id
        self.raise_id = raise_id
        self.later_id = later_id
        self.later_calls = 0

    @torch.jit.export
    def metadata(self) -> str:
        return self.inner.metadata()

    def forward(self, images, state, token_ids, token_mask):
        actions, weights, maps = self.inner(images, state, token_ids, token_mask)
        if bool((token_ids == self.raise_id).any()):
            raise RuntimeError("the policy failed on purpose")
        if bool((token_ids == self.later_id).any()):
            self.later_calls += 1
            if self.later_calls > 30:
                raise RuntimeError("the policy failed on purpose, under way")
        if bool((token_ids == self.nan_id).any()):
            actions = actions * float("nan")
        return actions, weights, maps


def faulty_policy(path):
    inner = torch.jit.load(str(ROOT / "policy" / "demo_policy.pt"))
    vocab = json.loads(inner.metadata())["tokenizer"]["vocab"]
    m = torch.jit.script(Faulty(inner, *(2 + vocab.index(c) for c in "!?;")))
    m.save(str(path))
    return path


def test_policy_nan_and_exceptions_hold_and_are_counted(peers, start_node, tmp_path):
    s, left, right = two_sided_scene(23)
    cams, arm = setup_graph(peers, s, instruction(s, left))
    start_node("-p", f"policy_path:={faulty_policy(tmp_path / 'faulty.pt')}")
    wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 60, "the arm over the first item")

    for mark, reason in (("!", "non-finite action"), ("?", "the policy failed on purpose")):
        errors = int(diag_value(peers, "inference_errors") or 0)
        cams.instruct(instruction(s, right) + mark)
        wait_for(lambda: status(peers)[0] == 2 and reason in status(peers)[1], 10, f"a hold for {reason}")
        assert int(diag_value(peers, "inference_errors")) > errors
        t0 = time.monotonic()
        time.sleep(0.1)  # commands already on their way
        held_at = arm.position()
        time.sleep(0.5)
        held = peers.recorder.commands_since(t0 + 0.1)
        assert held and all(c == held[0][1] for _, c in held), "holding repeats one command"
        assert np.abs(arm.position() - held_at).max() < 1e-9, "the arm did not move"
        # A good instruction again: the node resumes.
        cams.instruct(instruction(s, left if mark == "!" else right))
        wait_for(lambda: status(peers)[1] == "running", 10, "running again")


def test_a_restarted_camera_publisher_is_picked_up_again(peers, start_node):
    s, left, right = two_sided_scene(25)
    cams, arm = setup_graph(peers, s, instruction(s, left))
    start_node()
    wait_for(lambda: status(peers) and status(peers)[1] == "running", 60, "the node running")
    # The driver of the top camera goes away...
    peers.node.destroy_publisher(cams.pubs["top"])
    cams.silent.add("top")
    wait_for(lambda: "camera/top/image_raw went silent" in status(peers)[1], 5, "a hold")
    # ...and comes back as a new publisher.
    cams.pubs["top"] = peers.node.create_publisher(Image, "camera/top/image_raw", RELIABLE)
    cams.silent.clear()
    wait_for(lambda: status(peers)[1] == "running", 10, "running with the new publisher")
    cams.instruct(instruction(s, right))
    wait_for(lambda: xy_error(arm.position(), s, right) < 0.06, 20, "the arm following the new instruction")
