#!/usr/bin/env python3
"""Train the small demo policy on synthetic scenes and export it as TorchScript.

    .venv/bin/python python/train_demo_policy.py --steps 6000 --seed 0 --out policy/demo_policy.pt
    .venv/bin/python python/train_demo_policy.py --kind flow --steps 6000 --seed 0 \
        --out policy/flow_demo_policy.pt

`--kind chunk` (DemoPolicy, contract version 1, one `forward`) or `--kind flow`
(FlowDemoPolicy, contract version 2, `encode` and `velocity`; see vla_demo/model.py).

The rendered training scenes (640x480 renders of three cameras, downsampled by 5 exactly
as the node does) are cached as .npy under --cache-dir (default /tmp/vla_demo_cache),
keyed by seed, scene count and the source of vla_demo/scene.py. Instructions, start
poses and targets are drawn afresh for every batch from the cached scenes' items.
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
    n = stop - start
    images = np.empty((n, len(S.CAMERA_NAMES), IMG_H, IMG_W, 3), np.uint8)
    n_items = np.zeros(n, np.int64)
    colour = np.zeros((n, MAX_ITEMS), np.int64)
    shape = np.zeros((n, MAX_ITEMS), np.int64)
    xyt = np.zeros((n, MAX_ITEMS, 3), np.float64)  # x, y, top height
    for k in range(n):
        rng = np.random.default_rng([seed, start + k])
        sc = S.sample_scene(rng)
        for c, name in enumerate(S.CAMERA_NAMES):
            images[k, c] = S.downsample(S.render(sc, name, 640, 480, rng=rng), DOWNSAMPLE)
        n_items[k] = len(sc.items)
        for j, it in enumerate(sc.items):
            colour[k, j] = S.COLOURS.index(it.colour)
            shape[k, j] = S.SHAPES.index(it.shape)
            xyt[k, j] = (it.x, it.y, it.top)
    return start, images, n_items, colour, shape, xyt


def scene_fingerprint() -> str:
    """Hash of what the generator produces for a few fixed seeds (scenes, renders with
    jitter, instructions), so the cache follows changes of behaviour, not of comments."""
    h = hashlib.sha256()
    for seed in range(3):
        rng = np.random.default_rng([seed, 12345])
        sc = S.sample_scene(rng)
        h.update(repr(sc).encode())
        for name in S.CAMERA_NAMES:
            h.update(S.render(sc, name, 640, 480, rng=rng).tobytes())
        h.update(repr(S.make_instruction(sc, 0, rng)).encode())
    h.update(repr((S.TOKENIZER_META, S.MAX_TOKENS)).encode())
    return h.hexdigest()[:12]


def build_scenes(n: int, seed: int, cache_dir: Path, workers: int):
    """Rendered scenes and their items, from the cache when present."""
    key = f"scenes_s{seed}_n{n}_{scene_fingerprint()}"
    img_path, meta_path = cache_dir / f"{key}_images.npy", cache_dir / f"{key}_items.npz"
    if img_path.exists() and meta_path.exists():
        meta = np.load(meta_path)
        images = np.load(img_path, mmap_mode=None)
        print(f"scenes: {n} from cache {img_path}")
        return images, meta["n_items"], meta["colour"], meta["shape"], meta["xyt"], 0.0
    t0 = time.time()
    images = np.empty((n, len(S.CAMERA_NAMES), IMG_H, IMG_W, 3), np.uint8)
    n_items = np.zeros(n, np.int64)
    colour = np.zeros((n, MAX_ITEMS), np.int64)
    shape = np.zeros((n, MAX_ITEMS), np.int64)
    xyt = np.zeros((n, MAX_ITEMS, 3), np.float64)
    chunk = 250
    jobs = [(seed, a, min(a + chunk, n)) for a in range(0, n, chunk)]
    with mp.get_context("fork").Pool(workers) as pool:
        for done, (a, im, ni, co, sh, xy) in enumerate(pool.imap_unordered(_render_scenes, jobs)):
            b = a + len(ni)
            images[a:b], n_items[a:b], colour[a:b], shape[a:b], xyt[a:b] = im, ni, co, sh, xy
            if (done + 1) % 10 == 0:
                print(f"  rendered {min((done + 1) * chunk, n)}/{n} scenes, {time.time() - t0:.0f} s",
                      flush=True)
    dt = time.time() - t0
    print(f"scenes: rendered {n} in {dt:.0f} s")
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(img_path, images)
    np.savez(meta_path, n_items=n_items, colour=colour, shape=shape, xyt=xyt)
    return images, n_items, colour, shape, xyt, dt


def token_table(tok_meta: dict):
    """ids/mask [colour, shape, verb, lang, L] for every instruction there is."""
    L = tok_meta["max_length"]
    shape_ = (len(S.COLOURS), len(S.SHAPES), len(S.VERBS), len(LANGS))
    ids = np.zeros(shape_ + (L,), np.int64)
    mask = np.zeros(shape_ + (L,), bool)
    for ci, c in enumerate(S.COLOURS):
        for si, s in enumerate(S.SHAPES):
            for vi, v in enumerate(S.VERBS):
                for li, lang in enumerate(LANGS):
                    ids[ci, si, vi, li], mask[ci, si, vi, li] = S.tokenize(
                        S.instruction_text(c, s, v, lang), tok_meta)
    return ids, mask


class Sampler:
    """Draws (scene, item, verb, language, start pose) at random and returns raw
    (un-normalized) joint states and targets."""

    def __init__(self, n_items, colour, shape, xyt, tok_meta, rng):
        self.n_items, self.colour, self.shape, self.xyt = n_items, colour, shape, xyt
        self.ids, self.mask = token_table(tok_meta)
        self.rng = rng

    def draw(self, batch: int):
        rng = self.rng
        idx = rng.integers(0, len(self.n_items), batch)
        item = (rng.random(batch) * self.n_items[idx]).astype(np.int64)
        verb = rng.integers(0, len(S.VERBS), batch)
        lang = rng.integers(0, len(LANGS), batch)
        col, shp = self.colour[idx, item], self.shape[idx, item]
        x, y, top = self.xyt[idx, item].T
        z = top + np.where(verb == S.VERBS.index("move_above"), 0.10, 0.0)
        target = S.ik(np.stack([x, y, z], 1))
        start = S.random_starts(rng, batch)
        return idx, self.ids[col, shp, verb, lang], self.mask[col, shp, verb, lang], start, target


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


def main(argv=None) -> int:
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
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_all = time.time()

    images, n_items, colour, shape, xyt, render_s = build_scenes(
        args.scenes, args.seed, args.cache_dir, args.workers)
    images_t = torch.from_numpy(images)

    tok_meta = dict(S.TOKENIZER_META)
    sampler = Sampler(n_items, colour, shape, xyt, tok_meta, np.random.default_rng([args.seed, 1]))
    mean, std = normalization(sampler)
    flow = args.kind == "flow"
    if flow:
        meta = flow_metadata(mean, std, tok_meta, f"vla_demo FiLM patch-scorer flow-matching policy "
                             f"(seed {args.seed}, {args.steps} steps)", args.num_steps)
    else:
        meta = metadata(mean, std, tok_meta,
                        f"vla_demo FiLM patch-scorer policy (seed {args.seed}, {args.steps} steps)")
    meta_json = json.dumps(meta, ensure_ascii=False)

    model = (FlowDemoPolicy if flow else DemoPolicy)(meta_json, vocab_size=len(tok_meta["vocab"]),
                                                     space_id=2 + tok_meta["vocab"].index(" "))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")
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
        idx, ids, mask, start, target = sampler.draw(args.batch)
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
    train_s = time.time() - t_train

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
