"""Are the explanations true? On held-out scenes from the generator, run the node's own
explanation code (`vla_controller inspect --batch`) and measure:

- how often the hottest patch of the main view lies on the instructed item
  (for occlusion attribution and for the policy's own attention maps), against the
  chance that a patch picked at random does;
- how often the largest token weight falls on the colour or the shape word of the
  instruction, against the chance that a token picked at random does.

    python -m vla_demo.faithfulness --scenes 40 [--method occlusion] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import scene as sc
from .node_process import BIN, DEMO_POLICY, ROOT
from .png import write_png

ROWS, COLS = 12, 16
HELD_OUT_SEED = 424242


def grid_cells(mask: np.ndarray) -> np.ndarray:
    """Bool [ROWS, COLS]: the grid cells that hold any pixel of the mask."""
    h, w = mask.shape
    return mask.reshape(ROWS, h // ROWS, COLS, w // COLS).any(axis=(1, 3))


def make_cases(n: int, workdir: Path, seed: int = HELD_OUT_SEED):
    rng = np.random.default_rng(seed)
    cases, meta = [], []
    for i in range(n):
        s = sc.sample_scene(rng)
        target = int(rng.integers(0, len(s.items)))
        lang = ("en", "zh")[i % 2]
        text, verb = sc.make_instruction(s, target, rng, lang)
        q = sc.random_start(rng)
        d = workdir / f"case{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        for cam in sc.CAMERA_NAMES:
            write_png(d / f"{cam}.png", sc.render(s, cam))
        cases.append({"images": [f"case{i:03d}/{c}.png" for c in sc.CAMERA_NAMES],
                      "joints": [float(v) for v in q], "instruction": text, "out": f"case{i:03d}/out"})
        meta.append((s, target, text))
    (workdir / "cases.jsonl").write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n")
    return meta


def measure(n: int, method: str, binary: Path, policy: Path, workdir: Path) -> dict:
    meta = make_cases(n, workdir)
    subprocess.run([str(binary), "inspect", "--batch", str(workdir / "cases.jsonl"), "--policy", str(policy),
                    "--method", method], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    hits = {"explanation": 0, "policy_attention": 0, "token": 0}
    chance = {"patch": [], "token": []}
    for i, (s, target, text) in enumerate(meta):
        out = json.loads((workdir / f"case{i:03d}" / "out" / "explanation.json").read_text())
        cells = grid_cells(sc.object_mask(s, target, "main"))
        chance["patch"].append(cells.mean())
        for key, grid in (("explanation", out["grids"]["main"]), ("policy_attention", out["policy_attention"]["main"])):
            hot = np.unravel_index(int(np.argmax(grid)), (ROWS, COLS))
            hits[key] += bool(cells[hot])
        it = s.items[target]
        spans = sc.word_spans(text, it.colour, it.shape)
        in_words = np.zeros(len(out["tokens"]), bool)
        for a, b in spans:
            in_words[a:b] = True
        hits["token"] += bool(in_words[int(np.argmax(out["token_weights"]))])
        chance["token"].append(in_words.mean())
    return {
        "scenes": n,
        "method": method,
        "hottest_patch_on_instructed_item": hits["explanation"] / n,
        "hottest_policy_attention_patch_on_instructed_item": hits["policy_attention"] / n,
        "patch_chance": float(np.mean(chance["patch"])),
        "top_token_in_colour_or_shape_word": hits["token"] / n,
        "token_chance": float(np.mean(chance["token"])),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--method", default="occlusion", choices=["occlusion", "policy_attention"])
    ap.add_argument("--binary", type=Path, default=BIN)
    ap.add_argument("--policy", type=Path, default=DEMO_POLICY)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vla-faithfulness-") as d:
        r = measure(args.scenes, args.method, args.binary, args.policy, Path(d))
    print(f"{r['scenes']} held-out scenes, {r['method']} explanations:")
    print(f"  hottest main-view patch on the instructed item: {r['hottest_patch_on_instructed_item']:.0%}"
          f"  (chance {r['patch_chance']:.1%})")
    print(f"  same for the policy's own attention map:        {r['hottest_policy_attention_patch_on_instructed_item']:.0%}")
    print(f"  largest token weight on the colour/shape word:  {r['top_token_in_colour_or_shape_word']:.0%}"
          f"  (chance {r['token_chance']:.1%})")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
