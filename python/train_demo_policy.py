#!/usr/bin/env python3
"""Train the small demo policy on synthetic scenes and export it as TorchScript.

    .venv/bin/python python/train_demo_policy.py --steps 6000 --seed 0 --out policy/demo_policy.pt
    .venv/bin/python python/train_demo_policy.py --kind flow --steps 6000 --seed 0 \
        --out policy/flow_demo_policy.pt

`--kind chunk` (DemoPolicy, contract version 1, one `forward`) or `--kind flow`
(FlowDemoPolicy, contract version 2, `encode` and `velocity`; see vla_demo/model.py).

`--task reach` (the demo task: every verb heads for the named item) or `--task place`
("put" places the item on the named side of the tray, `vla_demo.scene.placement_xyz`;
`--right-share` is the share of "put" examples that name the right side). The two
policies of the placement diagnosis (policy/README.md):

    .venv/bin/python python/train_demo_policy.py --kind flow --task place --right-share 0.02 \
        --steps 6000 --seed 0 --out policy/place_a.pt
    .venv/bin/python python/train_demo_policy.py --kind flow --task place --right-share 0.02 \
        --init policy/place_a.pt --added-right 300 --added-share 0.25 --steps 1500 --lr 5e-4 \
        --seed 0 --out policy/place_b.pt

`--init` fine-tunes an exported policy (its weights and normalization); `--added-right N`
adds N fixed right-side "put" demonstrations (scene, item, language and start pose drawn
once with the seed), which make up `--added-share` of every batch.

The rendered training scenes (640x480 renders of three cameras, downsampled by 5 exactly
as the node does) are cached as .npy under --cache-dir (default /tmp/vla_demo_cache),
keyed by seed, scene count and what the generator draws and renders. The scene layouts
are drawn again from their seeds (cheap); instructions, start poses and targets are
drawn afresh for every batch.
The export satisfies docs/POLICY_CONTRACT.md; `check_policy.py` checks it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vla_demo import scene as S  # noqa: E402
from vla_demo.node_process import DEMO_POLICY  # noqa: E402
from vla_demo.model import DemoPolicy, FlowDemoPolicy  # noqa: E402
from vla_demo.check_policy import check_policy  # noqa: E402

DOWNSAMPLE = 5
IMG_H, IMG_W = 480 // DOWNSAMPLE, 640 // DOWNSAMPLE  # 96 x 128
MAX_ITEMS = 5
LANGS = ("en", "zh")


# ------------------------------------------------------------------------ data set


def _render_scenes(args):
    """Worker: render scenes [start, stop) of seed `seed`."""
    seed, start, stop = args
    images = np.empty((stop - start, len(S.CAMERA_NAMES), IMG_H, IMG_W, 3), np.uint8)
    for k in range(stop - start):
        rng = np.random.default_rng([seed, start + k])
        sc = S.sample_scene(rng)
        for c, name in enumerate(S.CAMERA_NAMES):
            images[k, c] = S.downsample(S.render(sc, name, 640, 480, rng=rng), DOWNSAMPLE)
    return start, images


class Layouts:
    """The scenes' items and trays as arrays, drawn from the scenes' seeds as
    `_render_scenes` draws them (0.2 ms a scene, so never cached)."""

    def __init__(self, n: int, seed: int):
        self.n_items = np.zeros(n, np.int64)
        self.colour = np.zeros((n, MAX_ITEMS), np.int64)
        self.shape = np.zeros((n, MAX_ITEMS), np.int64)
        self.xyt = np.zeros((n, MAX_ITEMS, 3), np.float64)  # x, y, top height
        self.tray = np.zeros((n, 3), np.float64)  # x, y, yaw
        for k in range(n):
            sc = S.sample_scene(np.random.default_rng([seed, k]))
            self.n_items[k] = len(sc.items)
            self.tray[k] = (*sc.tray_xy, sc.tray_yaw)
            for j, it in enumerate(sc.items):
                self.colour[k, j] = S.COLOURS.index(it.colour)
                self.shape[k, j] = S.SHAPES.index(it.shape)
                self.xyt[k, j] = (it.x, it.y, it.top)


def scene_fingerprint() -> str:
    """Hash of what the generator draws and renders for a few fixed seeds, so the cache
    of renders follows changes of behaviour, not of comments."""
    h = hashlib.sha256()
    for seed in range(3):
        rng = np.random.default_rng([seed, 12345])
        sc = S.sample_scene(rng)
        h.update(repr(sc).encode())
        for name in S.CAMERA_NAMES:
            h.update(S.render(sc, name, 640, 480, rng=rng).tobytes())
    return h.hexdigest()[:12]


def build_scenes(n: int, seed: int, cache_dir: Path, workers: int):
    """(images [n, cameras, 96, 128, 3] uint8, seconds spent rendering): the rendered
    scenes, from the cache when present."""
    img_path = cache_dir / f"scenes_s{seed}_n{n}_{scene_fingerprint()}_images.npy"
    if img_path.exists():
        print(f"scenes: {n} from cache {img_path}")
        return np.load(img_path), 0.0
    t0 = time.time()
    images = np.empty((n, len(S.CAMERA_NAMES), IMG_H, IMG_W, 3), np.uint8)
    chunk = 250
    jobs = [(seed, a, min(a + chunk, n)) for a in range(0, n, chunk)]
    with mp.get_context("fork").Pool(workers) as pool:
        for done, (a, im) in enumerate(pool.imap_unordered(_render_scenes, jobs)):
            images[a:a + len(im)] = im
            if (done + 1) % 10 == 0:
                print(f"  rendered {min((done + 1) * chunk, n)}/{n} scenes, {time.time() - t0:.0f} s",
                      flush=True)
    dt = time.time() - t0
    print(f"scenes: rendered {n} in {dt:.0f} s")
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(img_path, images)
    return images, dt


def token_table(tok_meta: dict):
    """ids/mask [colour, shape, verb, lang, side, L] for every instruction there is."""
    L = tok_meta["max_length"]
    shape_ = (len(S.COLOURS), len(S.SHAPES), len(S.VERBS), len(LANGS), len(S.SIDES))
    ids = np.zeros(shape_ + (L,), np.int64)
    mask = np.zeros(shape_ + (L,), bool)
    for ci, c in enumerate(S.COLOURS):
        for si, s in enumerate(S.SHAPES):
            for vi, v in enumerate(S.VERBS):
                for li, lang in enumerate(LANGS):
                    for di, side in enumerate(S.SIDES):
                        ids[ci, si, vi, li, di], mask[ci, si, vi, li, di] = S.tokenize(
                            S.instruction_text(c, s, v, lang, side), tok_meta)
    return ids, mask


PUT, RIGHT = S.VERBS.index("put"), S.SIDES.index("right")


class Sampler:
    """Draws (scene, item, verb, language, side, start pose) at random and returns raw
    (un-normalized) joint states and targets. In the reaching task every "put" says
    "right" and heads for the item; in the placement task it names the right side with
    probability `right_share`, else the left, and heads for that side of the tray."""

    def __init__(self, layouts: Layouts, tok_meta, rng, task: str = "reach", right_share: float = 0.5):
        self.lay = layouts
        self.ids, self.mask = token_table(tok_meta)
        self.rng = rng
        self.task = task
        self.right_share = right_share

    def draw(self, batch: int):
        rng = self.rng
        idx = rng.integers(0, len(self.lay.n_items), batch)
        item = (rng.random(batch) * self.lay.n_items[idx]).astype(np.int64)
        verb = rng.integers(0, len(S.VERBS), batch)
        lang = rng.integers(0, len(LANGS), batch)
        if self.task == "place":
            side = np.where(rng.random(batch) < self.right_share, RIGHT, 1 - RIGHT)
        else:
            side = np.full(batch, RIGHT)
        start = S.random_starts(rng, batch)
        return self.examples(idx, item, verb, lang, side, start)

    def examples(self, idx, item, verb, lang, side, start):
        """(scene index, ids, mask, start, target) of the given examples."""
        lay = self.lay
        col, shp = lay.colour[idx, item], lay.shape[idx, item]
        x, y, top = lay.xyt[idx, item].T
        xyz = np.stack([x, y, top + np.where(verb == S.VERBS.index("move_above"), 0.10, 0.0)], 1)
        if self.task == "place":
            place = S.placement_points(*lay.tray[idx].T, top, side != RIGHT)
            xyz = np.where((verb == PUT)[:, None], place, xyz)
        target = S.ik(xyz)
        return idx, self.ids[col, shp, verb, lang, side], self.mask[col, shp, verb, lang, side], start, target


class AddedRight:
    """`n` fixed right-side "put" demonstrations (scene, item, language, start pose),
    drawn once: the samples added to fine-tune a placement policy."""

    def __init__(self, sampler: Sampler, n: int, rng):
        lay = sampler.lay
        self.sampler = sampler
        self.idx = rng.integers(0, len(lay.n_items), n)
        self.item = (rng.random(n) * lay.n_items[self.idx]).astype(np.int64)
        self.lang = rng.integers(0, len(LANGS), n)
        self.start = S.random_starts(rng, n)
        self.rng = rng

    def draw(self, batch: int):
        k = self.rng.integers(0, len(self.idx), batch)
        return self.sampler.examples(self.idx[k], self.item[k], np.full(batch, PUT), self.lang[k],
                                     np.full(batch, RIGHT), self.start[k])


def draw_batch(sampler: Sampler, added: AddedRight | None, batch: int, added_share: float):
    """A batch from the sampler, with `added_share` of it from the added demonstrations."""
    if added is None:
        return sampler.draw(batch)
    k = int(round(batch * added_share))
    parts = [sampler.draw(batch - k), added.draw(k)]
    return tuple(np.concatenate(p) for p in zip(*parts))


def normalization(sampler: Sampler, n: int = 50000):
    """Mean and std over states and every action of the expert chunks (shared by
    state and action, so that normalization commutes with the chunk's ramp)."""
    _, _, _, start, target = sampler.draw(n)
    chunks = start[:, None, :] + (target - start)[:, None, :] * S.ramp()[None, :, None]
    allv = np.concatenate([start, chunks.reshape(-1, start.shape[1])], 0)
    mean = allv.mean(0)
    std = np.maximum(allv.std(0), 1e-3)
    return mean, std


def metadata(mean, std, tok_meta, name: str) -> dict:
    return {
        "contract_version": 1,
        "name": name,
        "camera_names": list(S.CAMERA_NAMES),
        "image_height": IMG_H,
        "image_width": IMG_W,
        "patch_grid": [12, 16],
        "joint_names": list(S.JOINT_NAMES),
        "action_dim": 6,
        "chunk_length": S.CHUNK_LENGTH,
        "control_rate_hz": S.CONTROL_RATE_HZ,
        "tokenizer": tok_meta,
        "normalization": {
            "state_mean": [float(v) for v in mean],
            "state_std": [float(v) for v in std],
            "action_mean": [float(v) for v in mean],
            "action_std": [float(v) for v in std],
        },
    }


def flow_metadata(mean, std, tok_meta, name: str, num_steps: int) -> dict:
    """Version 2, `kind: flow`: the same cameras (any size, area-resized), joints,
    tokenizer and normalization as `metadata`, and the integration pi0 uses."""
    names = list(S.JOINT_NAMES)
    cams = [{"name": c, "height": IMG_H, "width": IMG_W, "resize": "area"} for c in S.CAMERA_NAMES]
    vec = lambda v: [float(x) for x in v]  # noqa: E731
    return {
        "contract_version": 2,
        "name": name,
        "kind": "flow",
        "cameras": cams,
        "state_names": names,
        "action_names": names,
        "action_mode": "absolute",
        "chunk_length": S.CHUNK_LENGTH,
        "control_rate_hz": S.CONTROL_RATE_HZ,
        "tokenizer": tok_meta,
        "outputs": ["token_weights", "patch_maps"],
        "patch_grid": [12, 16],
        "normalization": {"state_mean": vec(mean), "state_std": vec(std),
                          "action_mean": vec(mean), "action_std": vec(std)},
        "flow": {"num_steps": num_steps, "time": "noise_at_one", "guidance": "autograd"},
    }


def flow_time(batch: int) -> torch.Tensor:
    """Training times as pi0 draws them: Beta(1.5, 1), kept off 0 (more weight on the
    noisy end, where the context has to do the work)."""
    return torch.distributions.Beta(1.5, 1.0).sample((batch,)) * 0.999 + 0.001


def flow_loss(model: FlowDemoPolicy, images, s_n, ids, mask, expert) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow-matching loss in x-prediction form: x_t on the straight path from the
    expert chunk (t = 0) to noise (t = 1), the distance of the denoised estimate to the
    expert chunk. Returns the loss and the ramp chunk (for the progress line)."""
    ramp_chunk, _, _, head_in = model.perceive(images, s_n, ids, mask)
    t = flow_time(expert.shape[0])
    x_t = t[:, None, None] * torch.randn_like(expert) + (1 - t[:, None, None]) * expert
    a_hat = model.denoise(x_t, t, [head_in, ramp_chunk])
    return torch.nn.functional.mse_loss(a_hat, expert), ramp_chunk


# ------------------------------------------------------------------------- training


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("chunk", "flow"), default="chunk")
    ap.add_argument("--num-steps", type=int, default=10, help="a flow policy's Euler steps")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEMO_POLICY)
    ap.add_argument("--scenes", type=int, default=12000, help="rendered training scenes")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/vla_demo_cache"))
    ap.add_argument("--workers", type=int, default=2, help="processes rendering scenes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--task", choices=("reach", "place"), default="reach")
    ap.add_argument("--right-share", type=float, default=0.5,
                    help="placement task: the share of \"put\" examples that name the right side")
    ap.add_argument("--init", type=Path, help="fine-tune this exported policy")
    ap.add_argument("--added-right", type=int, default=0, help="fixed right-side \"put\" demonstrations to add")
    ap.add_argument("--added-share", type=float, default=0.25, help="their share of every batch")
    args = ap.parse_args(argv)
    if args.added_right and args.task != "place":
        ap.error("--added-right is for --task place")
    return args


def make_model(args: argparse.Namespace, tok_meta: dict, mean, std, init) -> torch.nn.Module:
    """The policy to train, its metadata (name, tokenizer, normalization) built in;
    with `init`, that exported policy's weights."""
    flow = args.kind == "flow"
    what = "" if args.task == "reach" else f", placement task, right share {args.right_share}"
    if init is not None:
        what += f", fine-tuned from {args.init.name} with {args.added_right} added right-side samples"
    if flow:
        meta = flow_metadata(mean, std, tok_meta, f"vla_demo FiLM patch-scorer flow-matching policy "
                             f"(seed {args.seed}, {args.steps} steps{what})", args.num_steps)
    else:
        meta = metadata(mean, std, tok_meta,
                        f"vla_demo FiLM patch-scorer policy (seed {args.seed}, {args.steps} steps{what})")
    meta_json = json.dumps(meta, ensure_ascii=False)

    model = (FlowDemoPolicy if flow else DemoPolicy)(meta_json, vocab_size=len(tok_meta["vocab"]),
                                                     space_id=2 + tok_meta["vocab"].index(" "))
    if init is not None:
        model.load_state_dict(init.state_dict())
    return model


def train(model: torch.nn.Module, args: argparse.Namespace, sampler: Sampler, added, images_t: torch.Tensor,
          mean, std) -> float:
    """`args.steps` AdamW steps (warm-up, then cosine decay) on batches drawn afresh,
    a progress line every 250 steps. Returns the seconds it took."""
    flow = args.kind == "flow"
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = min(200, args.steps // 10)

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)
    ramp = torch.tensor(S.ramp(), dtype=torch.float32)

    t_train = time.time()
    model.train()
    run_loss = 0.0
    for step in range(args.steps):
        idx, ids, mask, start, target = draw_batch(sampler, added, args.batch, args.added_share)
        s_n = (torch.tensor(start, dtype=torch.float32) - mean_t) / std_t
        t_n = (torch.tensor(target, dtype=torch.float32) - mean_t) / std_t
        expert = s_n[:, None, :] + (t_n - s_n)[:, None, :] * ramp[None, :, None]
        inputs = (images_t[torch.from_numpy(idx)], s_n, torch.from_numpy(ids), torch.from_numpy(mask))
        if flow:
            loss, actions = flow_loss(model, *inputs, expert)
        else:
            actions, _, _ = model(*inputs)
            loss = torch.nn.functional.mse_loss(actions, expert)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run_loss += loss.item()
        if (step + 1) % 250 == 0 or step + 1 == args.steps:
            k = 250 if (step + 1) % 250 == 0 else (step + 1) % 250
            with torch.no_grad():
                a_final = actions[:, -1].numpy() * std + mean
                tip = S.fk(a_final)
                err = np.linalg.norm(tip[:, :2] - S.fk(target)[:, :2], axis=1)
            print(f"step {step + 1:5d}  loss {run_loss / k:.4f}  xy err {np.median(err) * 100:.1f} cm"
                  f"  lr {sched.get_last_lr()[0]:.2e}  {time.time() - t_train:.0f} s", flush=True)
            run_loss = 0.0
    return time.time() - t_train


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_all = time.time()

    images, render_s = build_scenes(args.scenes, args.seed, args.cache_dir, args.workers)
    images_t = torch.from_numpy(images)

    tok_meta = dict(S.PLACE_TOKENIZER_META if args.task == "place" else S.TOKENIZER_META)
    sampler = Sampler(Layouts(args.scenes, args.seed), tok_meta, np.random.default_rng([args.seed, 1]),
                      args.task, args.right_share)
    added = AddedRight(sampler, args.added_right, np.random.default_rng([args.seed, 2])) if args.added_right else None
    init = torch.jit.load(str(args.init)) if args.init else None
    if init is not None:
        # Fine-tuning keeps the normalization the weights were trained with.
        norm = json.loads(init.metadata())["normalization"]
        mean, std = np.array(norm["state_mean"]), np.array(norm["state_std"])
    else:
        mean, std = normalization(sampler)
    model = make_model(args, tok_meta, mean, std, init)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")
    train_s = train(model, args, sampler, added, images_t, mean, std)

    model.eval()
    scripted = torch.jit.script(model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(args.out))
    check_policy(args.out)
    summary = {
        "out": str(args.out),
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "scenes": args.scenes,
        "task": args.task,
        "render_s": round(render_s, 1),
        "train_s": round(train_s, 1),
        "total_s": round(time.time() - t_all, 1),
        "bytes": os.path.getsize(args.out),
        "params": n_params,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
