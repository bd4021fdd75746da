#!/usr/bin/env python3
"""Evaluate an exported policy file (TorchScript, loaded with torch.jit.load: the
Python model class is not used) on held-out synthetic scenes, the way the node runs
it: 640x480 render of each camera -> downsample by 5 -> tokenize -> normalize the
state -> forward (a flow policy: encode, then velocity integrated from seeded noise,
vla_demo/flow.py) -> de-normalize the actions.

Every scene is asked once in English and once in Chinese (same item, same verb, same
start pose), so the two languages are compared on the same scenes.

    .venv/bin/python python/eval_demo_policy.py --policy policy/demo_policy.pt \
        --scenes 500 --seed 1000 --json /tmp/eval.json

Measures, per language and together:
  (a) action:  the tool tip of the chunk's last action (fk) is nearer in (x, y) to the
      instructed item than to any other item; chance = mean of 1 / number of items;
  (b) map:     the hottest patch of the "main" camera's patch map overlaps the
      instructed item (its visible pixels, object_mask, on the 12 x 16 grid; any
      overlap counts); chance = mean fraction of the grid's cells the item overlaps;
  (c) token:   the largest token weight falls on the colour word or the shape word;
      chance = mean fraction of the instruction's tokens that belong to those words.
Also the median (x, y) and z error of that last action against the expert target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vla_demo import flow as F  # noqa: E402
from vla_demo import scene as S  # noqa: E402
from vla_demo.node_process import DEMO_POLICY  # noqa: E402

FACTOR = 5


def grid_mask(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """[rows, cols] bool: cells of the grid that contain any pixel of `mask`."""
    h, w = mask.shape
    return mask.reshape(rows, h // rows, cols, w // cols).any(axis=(1, 3))


def evaluate(policy_path: Path, n_scenes: int, seed: int, batch: int = 50) -> dict:
    module = torch.jit.load(str(policy_path))
    module.eval()
    meta = json.loads(module.metadata())
    if meta["contract_version"] == 1:
        cams, size = meta["camera_names"], (meta["image_width"], meta["image_height"])
    else:
        cams, size = [c["name"] for c in meta["cameras"]], (meta["cameras"][0]["width"], meta["cameras"][0]["height"])
    if size != (640 // FACTOR, 480 // FACTOR):
        raise SystemExit(f"policy takes {size[0]}x{size[1]}, not 640x480 / {FACTOR}")
    flow = meta.get("kind") == "flow"
    rows, cols = meta["patch_grid"]
    norm = meta["normalization"]
    s_mean, s_std = np.array(norm["state_mean"]), np.array(norm["state_std"])
    a_mean, a_std = np.array(norm["action_mean"]), np.array(norm["action_std"])
    tok = meta["tokenizer"]
    main_cam = cams.index("main")

    recs = []  # one per (scene, language)
    pending = []

    def flush():
        if not pending:
            return
        images = torch.from_numpy(np.stack([p["images"] for p in pending]))
        state = torch.from_numpy(np.stack([(p["start"] - s_mean) / s_std for p in pending]).astype(np.float32))
        ids = torch.from_numpy(np.stack([p["ids"] for p in pending]))
        mask = torch.from_numpy(np.stack([p["mask"] for p in pending]))
        with torch.no_grad():
            if flow:
                # Each case from its own noise, seeded as the node seeds it (there with
                # the camera set's stamp).
                seeds = [seed * 1_000_000 + len(recs) + k for k in range(len(pending))]
                actions, extras = F.sample(module, meta, list(images.unbind(1)), state, ids, mask, seeds)
                tw, pm = extras["token_weights"], extras["patch_maps"]
            else:
                actions, tw, pm = module(images, state, ids, mask)
        actions = actions.numpy() * a_std + a_mean
        for k, p in enumerate(pending):
            sc, item = p["scene"], p["item"]
            tip = S.fk(actions[k, -1])
            target = S.target_xyz(sc, item, p["verb"])
            d = [np.hypot(tip[0] - it.x, tip[1] - it.y) for it in sc.items]
            others = [d[j] for j in range(len(d)) if j != item]
            hot = np.unravel_index(int(np.argmax(pm[k, main_cam].numpy())), (rows, cols))
            spans = S.word_spans(p["text"], sc.items[item].colour, sc.items[item].shape)
            in_words = np.zeros(len(p["ids"]), bool)
            for a, b in spans:
                in_words[a:b] = True
            top_tok = int(np.argmax(tw[k].numpy()))
            recs.append({
                "lang": p["lang"],
                "same_colour": any(o.colour == sc.items[item].colour for j, o in enumerate(sc.items) if j != item),
                "action_ok": bool(d[item] < min(others)),
                "action_chance": 1.0 / len(sc.items),
                "map_ok": bool(p["cells"][hot]),
                "map_chance": float(p["cells"].mean()),
                "token_ok": bool(in_words[top_tok]),
                "token_chance": float(in_words.sum() / p["mask"].sum()),
                "xy_err": float(np.hypot(tip[0] - target[0], tip[1] - target[1])),
                "z_err": float(abs(tip[2] - target[2])),
            })
        pending.clear()

    rng = np.random.default_rng([seed, 7])
    t0 = time.time()
    for i in range(n_scenes):
        srng = np.random.default_rng([seed, i])
        sc = S.sample_scene(srng)
        images = np.stack([S.downsample(S.render(sc, c, 640, 480), FACTOR) for c in cams])
        item = int(rng.integers(0, len(sc.items)))
        _, verb = S.make_instruction(sc, item, rng)
        start = S.random_start(rng)
        cells = grid_mask(S.object_mask(sc, item, "main", 640, 480), rows, cols)
        for lang in ("en", "zh"):
            it = sc.items[item]
            text = S.instruction_text(it.colour, it.shape, verb, lang)
            ids, mask = S.tokenize(text, tok)
            pending.append(dict(scene=sc, item=item, verb=verb, lang=lang, text=text, ids=ids,
                                mask=mask, images=images, start=start, cells=cells))
        if len(pending) >= batch:
            flush()
    flush()

    def summarize(sel):
        r = [x for x in recs if sel(x)]
        out = {"n": len(r)}
        for k in ("action", "map", "token"):
            out[k] = float(np.mean([x[f"{k}_ok"] for x in r]))
            out[f"{k}_chance"] = float(np.mean([x[f"{k}_chance"] for x in r]))
        out["median_xy_err_m"] = float(np.median([x["xy_err"] for x in r]))
        out["median_z_err_m"] = float(np.median([x["z_err"] for x in r]))
        return out

    return {
        "policy": str(policy_path),
        "policy_name": meta["name"],
        "scenes": n_scenes,
        "seed": seed,
        "seconds": round(time.time() - t0, 1),
        "en": summarize(lambda x: x["lang"] == "en"),
        "zh": summarize(lambda x: x["lang"] == "zh"),
        "all": summarize(lambda x: True),
        # The hard case: another item of the instructed colour, so only the shape word
        # tells them apart.
        "same_colour": summarize(lambda x: x["same_colour"]),
        "distinct_colour": summarize(lambda x: not x["same_colour"]),
    }


def table(res: dict) -> str:
    lines = [
        f"{res['policy']}  ({res['scenes']} held-out scenes, seed {res['seed']})",
        f"{'':15} {'n':>5}  {'(a) action':>16}  {'(b) main map':>16}  {'(c) token':>16}  {'xy err':>7}  {'z err':>6}",
    ]
    for k in ("en", "zh", "all", "same_colour", "distinct_colour"):
        r = res[k]
        cell = lambda m: f"{r[m] * 100:5.1f}% (ch {r[m + '_chance'] * 100:4.1f}%)"  # noqa: E731
        lines.append(f"{k:15} {r['n']:5d}  {cell('action'):>16}  {cell('map'):>16}  {cell('token'):>16}"
                     f"  {r['median_xy_err_m'] * 100:5.1f}cm  {r['median_z_err_m'] * 100:4.1f}cm")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", type=Path, default=DEMO_POLICY)
    ap.add_argument("--scenes", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1000, help="held out: training uses other seeds")
    ap.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = evaluate(args.policy, args.scenes, args.seed)
    print(table(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
