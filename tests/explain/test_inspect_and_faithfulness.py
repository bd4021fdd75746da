"""The inspect command, and whether explanations are true: run through the real binary
on held-out scenes from the generator."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "vla_controller"

from vla_demo import faithfulness  # noqa: E402
from vla_demo import scene as sc  # noqa: E402
from vla_demo.node_process import DEMO_POLICY, FLOW_DEMO_POLICY  # noqa: E402
from vla_demo.png import write_png  # noqa: E402


def read_png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_inspect_writes_overlays_heatmap_and_json(tmp_path):
    s = sc.sample_scene(np.random.default_rng(17), 4)
    paths = []
    for cam in sc.CAMERA_NAMES:
        p = tmp_path / f"{cam}.png"
        write_png(p, sc.render(s, cam))
        paths.append(str(p))
    it = s.items[1]
    text = sc.instruction_text(it.colour, it.shape, "pick", "zh")
    out = tmp_path / "out"
    r = subprocess.run([str(BIN), "inspect", *paths, "--joints", "0,1.2,-1.8,-0.9,0,0.04",
                        "--instruction", text, "-o", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for cam in sc.CAMERA_NAMES:
        assert read_png_size(out / f"overlay_{cam}.png") == (640, 480)
    w, h = read_png_size(out / "language.png")
    assert w == 640 and h > 30
    j = json.loads((out / "explanation.json").read_text())
    assert j["instruction"] == text and j["method"] == "occlusion"
    assert j["tokens"] == list(text)
    assert len(j["actions"]) == 25 and all(len(a) == 6 for a in j["actions"])
    assert set(j["grids"]) == set(sc.CAMERA_NAMES) and all(len(g) == 192 for g in j["grids"].values())
    # The chunk heads for the instructed item.
    tip = sc.fk(np.array(j["actions"][-1]))
    d = [np.hypot(tip[0] - o.x, tip[1] - o.y) for o in s.items]
    assert int(np.argmin(d)) == 1, d


def test_inspect_refuses_wrong_inputs_clearly(tmp_path):
    r = subprocess.run([str(BIN), "inspect", "a.png", "--joints", "0", "--instruction", "x", "-o", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "1 images given; the policy takes 3 (main side top)" in r.stderr


@pytest.mark.parametrize("policy", [DEMO_POLICY, FLOW_DEMO_POLICY], ids=["chunk", "flow"])
def test_explanations_are_faithful(tmp_path, policy):
    """Held-out scenes: the hottest occlusion patch of the main view and the largest token
    weight land on the instructed item and its words far more often than chance. For the
    flow-matching policy, occlusion over the expected chunk, every occluded copy from
    the same noise."""
    r = faithfulness.measure(24, "occlusion", BIN, policy, tmp_path)
    print(json.dumps(r, indent=2))
    assert r["hottest_patch_on_instructed_item"] >= 0.6
    assert r["hottest_patch_on_instructed_item"] >= 10 * r["patch_chance"]
    assert r["hottest_policy_attention_patch_on_instructed_item"] >= 0.6
    assert r["top_token_in_colour_or_shape_word"] >= 0.55
    assert r["top_token_in_colour_or_shape_word"] >= 1.4 * r["token_chance"]
