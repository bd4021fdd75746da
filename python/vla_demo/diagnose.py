"""The placement diagnosis: told "put the X on the right side of the tray", does the arm
go right, and do the explanations say why not? Measured through the node's own policy
runner and explanation code (`vla_controller inspect --batch`), not the Python model.

On held-out placement scenes (`vla_demo.scene`, seeds `[seed, i]`), each asked once
with "right" and once with "left" (same item, start pose and language; English and
Chinese alternate from scene to scene), for each policy:

- side accuracy: the tool tip of the chunk's last action lies in the named half of
  the tray (`scene.tray_side_of`), per named side;
- the side word's weight: the largest relative token weight (each weight over the
  instruction's largest, as the language heatmap colours them) on the side word's
  tokens ("right", 右侧, ...), its mean and how often it reaches `attention_threshold`,
  and the mean of the weights' sum over the word;
- the tray's split: of the main view's occlusion map over the tray, the share on the
  named half (each grid cell's weight shared between the halves by their pixels in it).

    python -m vla_demo.diagnose --scenes 40 [--policies policy/place_a.pt policy/place_b.pt]
    python -m vla_demo.diagnose --show [--out out/diagnose]   # one right-side scene, pictures
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
from .node_process import BIN, ROOT
from .png import read_png, write_png

ROWS, COLS = 12, 16
HELD_OUT_SEED = 2000
THRESHOLD = 0.3
POLICIES = (ROOT / "policy" / "place_a.pt", ROOT / "policy" / "place_b.pt")


def cell_shares(mask: np.ndarray) -> np.ndarray:
    """[ROWS, COLS]: the fraction of each grid cell's pixels inside `mask`."""
    h, w = mask.shape
    return mask.reshape(ROWS, h // ROWS, COLS, w // COLS).mean(axis=(1, 3))


def make_cases(n: int, workdir: Path, seed: int = HELD_OUT_SEED) -> list[dict]:
    """Writes the scenes' camera PNGs and `cases.jsonl` (two cases a scene: right, then
    left); returns what scoring needs of each case."""
    cases, meta = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        s = sc.sample_scene(rng)
        item = int(rng.integers(0, len(s.items)))
        q = sc.random_start(rng)
        lang = ("en", "zh")[i % 2]
        d = workdir / f"scene{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        for cam in sc.CAMERA_NAMES:
            write_png(d / f"{cam}.png", sc.render(s, cam))
        left, right = sc.tray_half_masks(s, "main")
        for side in ("right", "left"):
            it = s.items[item]
            text = sc.instruction_text(it.colour, it.shape, "put", lang, side)
            cases.append({"images": [f"scene{i:03d}/{c}.png" for c in sc.CAMERA_NAMES],
                          "joints": [float(v) for v in q], "instruction": text, "out": f"scene{i:03d}/{side}"})
            meta.append({"scene": s, "item": item, "side": side, "text": text, "lang": lang,
                         "dir": d / side, "halves": (cell_shares(left), cell_shares(right))})
    (workdir / "cases.jsonl").write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n")
    return meta


def score(case: dict) -> dict:
    """The measures of one case from the node's explanation.json."""
    out = json.loads((case["dir"] / "explanation.json").read_text())
    s, side = case["scene"], case["side"]
    tip = sc.fk(np.asarray(out["actions"])[-1])
    offset = sc.tray_side_of(s, tip[:2])
    w = np.asarray(out["token_weights"], float)
    rel = w / w.max() if w.max() > 0 else w
    a, b = sc.side_span(case["text"], side)
    grid = np.clip(np.asarray(out["grids"]["main"], float).reshape(ROWS, COLS), 0.0, None)
    left, right = (float((grid * h).sum()) for h in case["halves"])
    named, total = (left if side == "left" else right), left + right
    return {
        "side": side,
        "lang": case["lang"],
        "chosen": "left" if offset > 0 else "right",
        "side_ok": (offset > 0) == (side == "left"),
        "offset_m": offset,
        "side_word_weight": float(rel[a:b].max()),
        "side_word_weight_sum": float(w[a:b].sum()),
        "named_half_share": named / total if total > 0 else 0.5,
    }


def run_inspect(policy: Path, workdir: Path, binary: Path = BIN) -> None:
    subprocess.run([str(binary), "inspect", "--batch", str(workdir / "cases.jsonl"), "--policy", str(policy),
                    "--method", "occlusion", "--threshold", str(THRESHOLD)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def summarize(records: list[dict]) -> dict:
    out = {}
    for side in ("right", "left"):
        r = [x for x in records if x["side"] == side]
        out[side] = {
            "n": len(r),
            "side_accuracy": float(np.mean([x["side_ok"] for x in r])),
            "side_word_weight_mean": float(np.mean([x["side_word_weight"] for x in r])),
            "side_word_over_threshold": float(np.mean([x["side_word_weight"] >= THRESHOLD for x in r])),
            "side_word_weight_sum_mean": float(np.mean([x["side_word_weight_sum"] for x in r])),
            "named_half_share_mean": float(np.mean([x["named_half_share"] for x in r])),
        }
    return out


def measure(policies, n: int, workdir: Path, seed: int = HELD_OUT_SEED, binary: Path = BIN) -> dict:
    """Per policy: the summary per named side and every case's record."""
    result = {"scenes": n, "seed": seed, "attention_threshold": THRESHOLD, "policies": {}}
    for k, policy in enumerate(policies):
        d = workdir / f"p{k}"
        cases = make_cases(n, d, seed)
        run_inspect(Path(policy), d, binary)
        records = [score(c) for c in cases]
        result["policies"][Path(policy).name] = {"summary": summarize(records), "cases": records}
    return result


def table(result: dict) -> str:
    lines = [f"{result['scenes']} held-out placement scenes (seed {result['seed']}), each asked right and left:",
             f"{'policy':14} {'named':6} {'side accuracy':>14} {'side word weight':>17} "
             f"{'>= ' + str(result['attention_threshold']):>8} {'tray map on named half':>23}"]
    for name, p in result["policies"].items():
        for side, r in p["summary"].items():
            lines.append(f"{name:14} {side:6} {r['side_accuracy'] * 100:13.0f}% {r['side_word_weight_mean']:17.2f} "
                         f"{r['side_word_over_threshold'] * 100:7.0f}% {r['named_half_share_mean'] * 100:22.0f}%")
    return "\n".join(lines)


def show(policies, out: Path, scene_index: int = 0, seed: int = HELD_OUT_SEED, binary: Path = BIN) -> str:
    """One right-side scene through each policy: a line each (side chosen, side word
    weight, tray split) and `side_by_side.png` (each policy's main overlay over its
    language heatmap, one column a policy)."""
    lines, columns = [], []
    for k, policy in enumerate(policies):
        d = out / Path(policy).stem
        case = [c for c in make_cases(scene_index + 1, d, seed) if c["side"] == "right"][scene_index]
        run_inspect(Path(policy), d, binary)
        r = score(case)
        lines.append(f"{Path(policy).name}: told {case['text']!r}: put it on the {r['chosen']} "
                     f"({r['offset_m'] * 100:+.1f} cm from the midline); side word weight {r['side_word_weight']:.2f}"
                     f" (threshold {THRESHOLD}); tray map {r['named_half_share'] * 100:.0f}% right, "
                     f"{(1 - r['named_half_share']) * 100:.0f}% left")
        overlay, language = read_png(case["dir"] / "overlay_main.png"), read_png(case["dir"] / "language.png")
        w = max(overlay.shape[1], language.shape[1])
        pad = lambda im: np.pad(im, ((0, 0), (0, w - im.shape[1]), (0, 0)), constant_values=255)  # noqa: E731
        columns.append(np.concatenate([pad(overlay), pad(language)], 0))
    h = max(c.shape[0] for c in columns)
    picture = np.concatenate([np.pad(c, ((0, h - c.shape[0]), (0, 8), (0, 0)), constant_values=255) for c in columns], 1)
    write_png(out / "side_by_side.png", picture)
    lines.append(f"pictures: {out / 'side_by_side.png'} (left: {Path(policies[0]).name}, right: {Path(policies[-1]).name})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", type=Path, nargs="+", default=list(POLICIES))
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    ap.add_argument("--binary", type=Path, default=BIN)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--show", action="store_true", help="one right-side scene, with pictures")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "diagnose")
    args = ap.parse_args(argv)
    if args.show:
        print(show(args.policies, args.out, 0, args.seed, args.binary))
        return 0
    with tempfile.TemporaryDirectory(prefix="vla-diagnose-") as d:
        result = measure(args.policies, args.scenes, Path(d), args.seed, args.binary)
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
