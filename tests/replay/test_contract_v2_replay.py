"""Contract version 2 on a recording: one camera, no instruction, a policy whose joints
are named differently (joint_name_map) and whose actions are deltas added to the state
the chunk was computed from."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from vla_demo import bags
from vla_demo import contract_policies as cp
from vla_demo import scene as sc
from vla_demo.node_process import BIN, ROOT

SCENE = sc.sample_scene(np.random.default_rng(7), 4)
POLICY_NAMES = [f"arm/{n}" for n in sc.JOINT_NAMES]
NAME_MAP = ",".join(f"'{robot}:{policy}'" for robot, policy in zip(sc.JOINT_NAMES, POLICY_NAMES))
# Small enough to pass the step limit in one tick, different per joint.
DELTA = [0.01, -0.02, 0.03, -0.01, 0.02, 0.005]


def replay(bag, out, policy, *args):
    return subprocess.run([str(BIN), "replay", str(bag), "-o", str(out), "--quiet", "-p", f"policy_path:={policy}",
                           "-p", "camera_names:=[top]", "-p", "control_rate_hz:=30.0", *args],
                          cwd=ROOT, capture_output=True, text=True)


def commands(bag):
    with AnyReader([bag], default_typestore=bags.TYPESTORE) as r:
        conns = [c for c in r.connections if c.topic == "/joint_commands"]
        return [list(r.deserialize(raw, c.msgtype).data) for c, _, raw in r.messages(connections=conns)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("v2")
    return bags.write_bag(d / "top_only", bags.scene_messages(SCENE, [], seconds=1.5, cameras=("top",)))


@pytest.fixture(scope="module")
def delta_policy(tmp_path_factory):
    # Actions in reverse order of the state, so that the node must map them by name.
    actions = list(reversed(POLICY_NAMES))
    meta = cp.metadata([cp.camera("top", 128, 96)], POLICY_NAMES, actions, action_mode="delta", control_rate_hz=30.0)
    delta = [DELTA[POLICY_NAMES.index(a)] for a in actions]
    return cp.save(cp.MeanColour(meta, gain=0.0, delta=delta), tmp_path_factory.mktemp("p") / "delta.pt")


def test_one_camera_no_instruction_mapped_names_and_delta_actions(recording, delta_policy, tmp_path):
    r = replay(recording, tmp_path / "out", delta_policy, "-p", f"joint_name_map:=[{NAME_MAP}]")
    assert r.returncode == 0, r.stdout + r.stderr
    acc = json.loads((tmp_path / "out" / "accounting.json").read_text())
    assert acc["synchronized_sets"] >= 40 and acc["inferences"] == acc["synchronized_sets"]
    assert acc["used"]["camera/top/image_raw"] == acc["received"]["camera/top/image_raw"]
    assert "/instruction" not in acc["read"] and not acc["errors"]
    cmds = np.array(commands(tmp_path / "out"))
    assert len(cmds) > 30
    # Every command is the recorded state plus the policy's delta, joint by joint.
    np.testing.assert_allclose(cmds, np.tile(bags.START + np.array(DELTA), (len(cmds), 1)), atol=1e-12)


def test_joints_that_do_not_meet_stop_the_replay_with_the_reason(recording, delta_policy, tmp_path):
    r = replay(recording, tmp_path / "out", delta_policy)
    assert r.returncode != 0
    assert "`shoulder_pan` of joint_names is not an action of the policy" in r.stderr, r.stderr
    r = replay(recording, tmp_path / "out2", delta_policy, "-p", "joint_name_map:=[shoulder_pan]")
    assert r.returncode != 0 and "joint_name_map" in r.stderr and "robot_joint:policy_joint" in r.stderr, r.stderr
