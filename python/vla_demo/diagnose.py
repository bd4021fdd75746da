"""The placement diagnosis: told "put the X on the right side of the tray", does the arm
go right, and do the explanations say why not? Measured through the node's own policy
runner and explanation code (`vla_controller inspect --batch`), not the Python model.

On held-out placement scenes (`vla_demo.scene`, seeds `[seed, i]`), each asked once
with "right" and once with "left" (same item, start pose and language; English and
Chinese alternate from scene to scene), for each policy:

- side accuracy: the tool tip of the chunk's last action lies in the named half of
  the tray (`scene.tray_side_of`), per named side; and placed: the tip within 3 cm of
  the expert's point (the named item's top over the middle of the named half), which
  scores the item's height as well as the side;
- the side word's weight: the largest relative token weight (each weight over the
  instruction's largest, as the language heatmap colours them) on the side word's
  tokens ("right", 右侧, ...), its mean and how often it reaches `attention_threshold`,
  and the mean of the weights' sum over the word. Twice: by token occlusion (each token
  masked in turn, the change of the chunk measured: what the action depends on) and by
  the policy's own token weights (where its language attention looks);
- the tray's split: of the main view's occlusion map over the tray, the share on the
  named half (each grid cell's weight shared between the halves by their pixels in it).

Two ways through the node: `inspect` (each case's PNGs and joints), and `--replay`: each
case recorded as a rosbag2 (`vla_demo.bags`: one second of the three cameras at 30 Hz,
joint_states at 100 Hz, the instruction) and run by `vla_controller replay`; the side is
read from the first chunk the node published (`~/chunk`), the side word's weight from
`~/attention/tokens` and the tray split from `~/attention/grids` (the policy's own token
weights are not in the recording; replay measures by occlusion only).

    python -m vla_demo.diagnose --scenes 40 [--policies policy/place_a.pt policy/place_b.pt]
    python -m vla_demo.diagnose --scenes 10 --replay
    python -m vla_demo.diagnose --show [--scene 28] [--out out/diagnose]   # one scene told right, pictures
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import bags
from . import scene as sc
from .node_process import BIN, ROOT
from .png import read_png, write_png

ROWS, COLS = 12, 16
HELD_OUT_SEED = 2000
THRESHOLD = 0.3
#: A placement counts when the tool tip ends within this of the expert's point.
PLACED_M = 0.03
#: The scene `--show` (and `make diagnose`) shows: one where A puts the item on the left
#: when told "right", as it does in 9 of the first 40 held-out scenes' 20 English cases.
SHOWN_SCENE = 28
POLICIES = (ROOT / "policy" / "place_a.pt", ROOT / "policy" / "place_b.pt")


def cell_shares(mask: np.ndarray) -> np.ndarray:
    """[ROWS, COLS]: the fraction of each grid cell's pixels inside `mask`."""
    h, w = mask.shape
    return mask.reshape(ROWS, h // ROWS, COLS, w // COLS).mean(axis=(1, 3))


def make_cases(scenes, workdir: Path, seed: int = HELD_OUT_SEED, sides=("right", "left")) -> list[dict]:
    """Writes the camera PNGs of the held-out scenes of these indices and `cases.jsonl`
    (a case a scene and side, in the order of `sides`); returns what scoring needs of
    each case."""
    cases, meta = [], []
    for i in scenes:
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
        for side in sides:
            it = s.items[item]
            text = sc.instruction_text(it.colour, it.shape, "put", lang, side)
            cases.append({"images": [f"scene{i:03d}/{c}.png" for c in sc.CAMERA_NAMES],
                          "joints": [float(v) for v in q], "instruction": text, "out": f"scene{i:03d}/{side}"})
            meta.append({"scene": s, "item": item, "side": side, "text": text, "lang": lang, "q": q,
                         "dir": d / side, "halves": (cell_shares(left), cell_shares(right))})
    (workdir / "cases.jsonl").write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n")
    return meta


def score(case: dict, out: dict | None = None) -> dict:
    """The measures of one case from the node's explanation (inspect's explanation.json
    unless given)."""
    out = out or json.loads((case["dir"] / "explanation.json").read_text())
    s, side = case["scene"], case["side"]
    tip = sc.fk(np.asarray(out["actions"])[-1])
    offset = sc.tray_side_of(s, tip[:2])
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
        # The expert's point: the named item's top held over the middle of the named half.
        "placement_error_m": float(np.linalg.norm(tip - sc.placement_xyz(s, case["item"], side))),
        **side_word(out["token_weights"], a, b, "occlusion"),
        **side_word(out["policy_token_weights"], a, b, "attention"),
        "named_half_share": named / total if total > 0 else 0.5,
    }


def side_word(weights: list[float], a: int, b: int, source: str) -> dict:
    """Tokens `a..b`: the largest relative weight and the weights' sum."""
    if not weights:
        return {f"side_word_{source}": float("nan"), f"side_word_{source}_sum": float("nan")}
    w = np.asarray(weights, float)
    rel = w / w.max() if w.max() > 0 else w
    return {f"side_word_{source}": float(rel[a:b].max()), f"side_word_{source}_sum": float(w[a:b].sum())}


def run_node(*args) -> None:
    """Runs the node's command line; its log is shown only when it fails."""
    r = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")


def run_inspect(policy: Path, workdir: Path, binary: Path = BIN) -> None:
    run_node(binary, "inspect", "--batch", workdir / "cases.jsonl", "--policy", policy,
             "--method", "occlusion", "--token-method", "occlusion", "--threshold", THRESHOLD)


def replay_case(policy: Path, case: dict, binary: Path = BIN) -> dict:
    """Records the case as a bag, replays it through the node and returns what `score`
    reads: the first chunk's actions, the first explanation's token weights and grids.
    (rclpy and the message packages are imported here: only replay needs the ROS
    environment.)"""
    bag = bags.write_bag(case["dir"] / "recording", bags.scene_messages(
        case["scene"], [(0.0, case["text"])], seconds=1.0, q=case["q"]))
    out = case["dir"] / "replayed"
    run_node(binary, "replay", bag, "-o", out, "--quiet", "-p", f"policy_path:={policy}",
             "-p", "explanation_method:=occlusion", "-p", "token_weight_method:=occlusion",
             # One explanation in the second of recording (the first camera set's).
             "-p", "explain_rate_hz:=0.5", "-p", f"attention_threshold:={THRESHOLD}")
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from trajectory_msgs.msg import JointTrajectory
    first = {}
    with AnyReader([out], default_typestore=bags.TYPESTORE) as r:
        for c, _, raw in r.messages(connections=[c for c in r.connections if c.topic in
                                                 ("/vla_controller/chunk", "/vla_controller/attention/tokens",
                                                  "/vla_controller/attention/grids")]):
            if c.topic == "/vla_controller/chunk":
                # rosbags (0.11) refuses every JointTrajectory's length, rclpy's own
                # serialization included; rclpy reads it.
                first.setdefault(c.topic, deserialize_message(bytes(raw), JointTrajectory))
                continue
            m = r.deserialize(raw, c.msgtype)
            first.setdefault(c.topic if c.topic.endswith("tokens") else m.camera_name, m)
    return {"actions": [list(p.positions) for p in first["/vla_controller/chunk"].points],
            "token_weights": list(first["/vla_controller/attention/tokens"].weights),
            "policy_token_weights": [],
            "grids": {"main": list(first["main"].values)}}


def summarize(records: list[dict]) -> dict:
    """Per named side, over both languages and over each (`right en`, `right zh`, ...)."""
    out = {}
    for key in ("right", "left", "right en", "right zh", "left en", "left zh"):
        side, *lang = key.split()
        r = [x for x in records if x["side"] == side and (not lang or x["lang"] == lang[0])]
        if not r:
            continue
        out[key] = {"n": len(r), "side_accuracy": float(np.mean([x["side_ok"] for x in r])),
                    "placed": float(np.mean([x["placement_error_m"] < PLACED_M for x in r]))}
        for source in ("occlusion", "attention"):
            k = f"side_word_{source}"
            if any(np.isnan(x[k]) for x in r):  # not measured (replay: no policy weights)
                continue
            out[key] |= {f"{k}_mean": float(np.mean([x[k] for x in r])),
                          f"{k}_over_threshold": float(np.mean([x[k] >= THRESHOLD for x in r])),
                          f"{k}_sum_mean": float(np.mean([x[f"{k}_sum"] for x in r]))}
        out[key]["named_half_share_mean"] = float(np.mean([x["named_half_share"] for x in r]))
    return out


def measure(policies, n: int, workdir: Path, seed: int = HELD_OUT_SEED, binary: Path = BIN,
            replay: bool = False) -> dict:
    """Per policy: the summary per named side and every case's record, through inspect
    or (`replay`) through recordings replayed by the node."""
    result = {"scenes": n, "seed": seed, "attention_threshold": THRESHOLD, "through": "replay" if replay else "inspect",
              "policies": {}}
    for k, policy in enumerate(policies):
        d = workdir / f"p{k}"
        cases = make_cases(range(n), d, seed)
        if replay:
            records = [score(c, replay_case(Path(policy), c, binary)) for c in cases]
        else:
            run_inspect(Path(policy), d, binary)
            records = [score(c) for c in cases]
        result["policies"][Path(policy).name] = {"summary": summarize(records), "cases": records}
    return result


def table(result: dict) -> str:
    t = f"{result['attention_threshold']}"
    lines = [f"{result['scenes']} held-out placement scenes (seed {result['seed']}), each asked right and left,"
             f" through {result['through']};",
             "side word: its relative weight (mean, share of cases at or over the threshold) by token occlusion",
             "and by the policy's own attention:",
             f"{'policy':14} {'named':9} {'side accuracy':>14} {f'placed ({PLACED_M * 100:.0f} cm)':>14} {'occlusion':>10} {'>= ' + t:>7} "
             f"{'attention':>10} {'>= ' + t:>7} {'tray map on named half':>23}"]
    for name, p in result["policies"].items():
        for side, r in p["summary"].items():
            word = "".join(f"{r[f'side_word_{s}_mean']:10.2f} {r[f'side_word_{s}_over_threshold'] * 100:6.0f}% "
                           if f"side_word_{s}_mean" in r else f"{'-':>10} {'-':>7} " for s in ("occlusion", "attention"))
            lines.append(f"{name:14} {side:9} {r['side_accuracy'] * 100:13.0f}% {r['placed'] * 100:13.0f}% {word}"
                         f"{r['named_half_share_mean'] * 100:22.0f}%")
    return "\n".join(lines)


def show(policies, out: Path, scene: int = SHOWN_SCENE, seed: int = HELD_OUT_SEED, binary: Path = BIN) -> str:
    """One scene told "right" through each policy: a line each (side chosen, side word
    weight, tray split) and `side_by_side.png` (each policy's main overlay over its
    language heatmap, one column a policy)."""
    lines, columns = [], []
    for k, policy in enumerate(policies):
        d = out / Path(policy).stem
        case, = make_cases([scene], d, seed, sides=("right",))
        run_inspect(Path(policy), d, binary)
        r = score(case)
        lines.append(f"{Path(policy).name}: told {case['text']!r}: put it on the {r['chosen']} "
                     f"({r['offset_m'] * 100:+.1f} cm from the midline); side word weight by occlusion "
                     f"{r['side_word_occlusion']:.2f}, by the policy's attention {r['side_word_attention']:.2f}"
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
    ap.add_argument("--replay", action="store_true", help="each case as a recording, through vla_controller replay")
    ap.add_argument("--show", action="store_true", help="one scene told right, with pictures")
    ap.add_argument("--scene", type=int, default=SHOWN_SCENE, help="with --show: the held-out scene's index")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "diagnose")
    args = ap.parse_args(argv)
    if args.show:
        print(show(args.policies, args.out, args.scene, args.seed, args.binary))
        return 0
    with tempfile.TemporaryDirectory(prefix="vla-diagnose-") as d:
        result = measure(args.policies, args.scenes, Path(d), args.seed, args.binary, args.replay)
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
