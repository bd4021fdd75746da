"""The flow-matching demo policy (policy/flow_demo_policy.pt) through the node's own
code (`vla_controller inspect`): the chunk it integrates is the one Python integrates
from the same noise, and it heads for the instructed item. Its explanations are tested
beside the chunk policy's (test_inspect_and_faithfulness.py)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import torch

from vla_demo import flow
from vla_demo import scene as sc
from vla_demo.node_process import BIN, FLOW_DEMO_POLICY, ROOT
from vla_demo.png import write_png


def test_the_node_integrates_the_flow_demo_policy_as_python_does(tmp_path):
    s = sc.sample_scene(np.random.default_rng(31), 4)
    renders = {cam: sc.render(s, cam) for cam in sc.CAMERA_NAMES}
    for cam, img in renders.items():
        write_png(tmp_path / f"{cam}.png", img)
    it = s.items[2]
    text = sc.instruction_text(it.colour, it.shape, "move_above", "en")
    q = np.array([0.1, 1.1, -1.7, -0.8, 0.1, 0.04])
    out = tmp_path / "out"
    r = subprocess.run([str(BIN), "inspect", *(str(tmp_path / f"{c}.png") for c in sc.CAMERA_NAMES),
                        "--joints", ",".join(map(str, q)), "--instruction", text, "--policy", str(FLOW_DEMO_POLICY),
                        "--method", "policy_attention", "-o", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    node = np.array(json.loads((out / "explanation.json").read_text())["actions"])

    module = torch.jit.load(str(FLOW_DEMO_POLICY))
    meta = json.loads(module.metadata())
    norm = {k: np.array(v) for k, v in meta["normalization"].items()}
    ids, mask = sc.tokenize(text, meta["tokenizer"])
    images = [torch.from_numpy(sc.downsample(renders[c], 5))[None] for c in sc.CAMERA_NAMES]
    state = torch.from_numpy(((q - norm["state_mean"]) / norm["state_std"]).astype(np.float32))[None]
    with torch.no_grad():
        # inspect runs one set stamped 0: the noise of seed 0.
        chunk, _ = flow.sample(module, meta, images, state, torch.from_numpy(ids)[None],
                               torch.from_numpy(mask)[None], [0])
    python = chunk[0].numpy() * norm["action_std"] + norm["action_mean"]
    assert node.shape == python.shape == (25, 6)
    assert np.abs(node - python).max() < 1e-4, np.abs(node - python).max()

    tip = sc.fk(node[-1])
    d = [np.hypot(tip[0] - o.x, tip[1] - o.y) for o in s.items]
    assert int(np.argmin(d)) == 2, d

