#!/usr/bin/env python3
"""Check an exported demo policy file against docs/POLICY_CONTRACT.md with
torch.jit.load: metadata keys and values, and the dtype, shape and sums of every output
for B=1 and B=4 (random inputs) and for the node's start-up probe (all-zero inputs).
Version 1 (`forward`) or version 2 `kind: flow` (`encode` and `velocity`, integrated as
the node integrates them, vla_demo/flow.py).

    .venv/bin/python -m vla_demo.check_policy policy/demo_policy.pt
    .venv/bin/python -m vla_demo.check_policy policy/flow_demo_policy.pt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from . import flow

REQUIRED = {
    "contract_version": int, "name": str, "camera_names": list, "image_height": int,
    "image_width": int, "patch_grid": list, "joint_names": list, "action_dim": int,
    "chunk_length": int, "control_rate_hz": float, "tokenizer": dict, "normalization": dict,
}


def check_policy(path) -> dict:
    m = torch.jit.load(str(path))
    m.eval()
    meta = json.loads(m.metadata())
    if meta.get("contract_version") == 2:
        check_flow(m, meta)
    else:
        check_v1(m, meta)
    print(f"check_policy: {path} OK ({meta['name']})")
    return meta


def inputs(g: torch.Generator, B: int, sizes: list[tuple[int, int]], S: int, tok: dict, zero: bool):
    """Per-camera images [B, H, W, 3], state, token ids and mask: all zero (the node's
    start-up probe) or random (a tokenized text never starts with a space)."""
    L = tok["max_length"]
    if zero:
        return ([torch.zeros(B, h, w, 3, dtype=torch.uint8) for h, w in sizes], torch.zeros(B, S),
                torch.zeros(B, L, dtype=torch.int64), torch.zeros(B, L, dtype=torch.bool))
    images = [torch.randint(0, 256, (B, h, w, 3), generator=g, dtype=torch.uint8) for h, w in sizes]
    state = torch.randn(B, S, generator=g)
    n = torch.randint(1, L + 1, (B,), generator=g)
    mask = torch.arange(L)[None, :] < n[:, None]
    ids = torch.randint(1, len(tok["vocab"]) + 2, (B, L), generator=g)
    ids[:, 0] = 2 + tok["vocab"].index("a")
    return images, state, ids * mask, mask


def check_outputs(tw: torch.Tensor, pm: torch.Tensor, mask: torch.Tensor, B: int, C: int, R: int, G: int, zero: bool):
    L = mask.shape[1]
    assert tw.dtype == torch.float32 and tuple(tw.shape) == (B, L), tw.shape
    assert pm.dtype == torch.float32 and tuple(pm.shape) == (B, C, R, G), pm.shape
    assert torch.isfinite(tw).all() and torch.isfinite(pm).all()
    assert torch.allclose(pm.sum(dim=(2, 3)), torch.ones(B, C), atol=1e-4)
    assert (tw[~mask] == 0).all()
    if not zero:
        assert torch.allclose(tw.sum(1), torch.ones(B), atol=1e-4)


def check_flow(m, meta: dict) -> None:
    """Version 2, `kind: flow`, with the demo's outputs: the chunk integrated from the
    seeded noise is finite, of the metadata's shape, and the same from the same seed."""
    assert meta["kind"] == "flow" and meta["outputs"] == ["token_weights", "patch_maps"], meta
    assert meta["flow"]["time"] in ("noise_at_one", "noise_at_zero") and meta["flow"]["num_steps"] >= 1
    T, S, A = meta["chunk_length"], len(meta["state_names"]), len(meta["action_names"])
    sizes = [(c["height"], c["width"]) for c in meta["cameras"]]
    R, G = meta["patch_grid"]
    for k, n in (("state_mean", S), ("state_std", S), ("action_mean", A), ("action_std", A)):
        assert len(meta["normalization"][k]) == n, k
    g = torch.Generator().manual_seed(0)
    for B in (1, 4):
        for zero in (False, True):
            images, state, ids, mask = inputs(g, B, sizes, S, meta["tokenizer"], zero)
            with torch.no_grad():
                chunk, extras = flow.sample(m, meta, images, state, ids, mask, list(range(B)))
                again, _ = flow.sample(m, meta, images, state, ids, mask, list(range(B)))
            assert chunk.dtype == torch.float32 and tuple(chunk.shape) == (B, T, A), chunk.shape
            assert torch.isfinite(chunk).all() and torch.equal(chunk, again)
            check_outputs(extras["token_weights"], extras["patch_maps"], mask, B, len(sizes), R, G, zero)


def check_v1(m, meta: dict) -> None:
    for k, t in REQUIRED.items():
        assert k in meta, f"metadata lacks {k}"
        assert isinstance(meta[k], t), f"metadata {k} is {type(meta[k]).__name__}, expected {t.__name__}"
    assert meta["contract_version"] == 1
    A, T = meta["action_dim"], meta["chunk_length"]
    C, H, W = len(meta["camera_names"]), meta["image_height"], meta["image_width"]
    R, G = meta["patch_grid"]
    tok = meta["tokenizer"]
    assert tok["type"] == "char" and tok["pad_id"] == 0 and tok["unk_id"] == 1 and tok["lowercase"] is True
    assert len(meta["joint_names"]) == A
    for k in ("state_mean", "state_std", "action_mean", "action_std"):
        assert len(meta["normalization"][k]) == A, k
        if k.endswith("std"):
            assert min(meta["normalization"][k]) > 0, k

    g = torch.Generator().manual_seed(0)
    for B in (1, 4):
        for zero in (False, True):
            images, state, ids, mask = inputs(g, B, [(H, W)] * C, A, tok, zero)
            with torch.no_grad():
                out = m(torch.stack(images, 1), state, ids, mask)
            assert isinstance(out, tuple) and len(out) == 3
            actions, tw, pm = out
            assert actions.dtype == torch.float32 and tuple(actions.shape) == (B, T, A), actions.shape
            assert torch.isfinite(actions).all()
            check_outputs(tw, pm, mask, B, C, R, G, zero)


if __name__ == "__main__":
    from .node_process import DEMO_POLICY

    check_policy(Path(sys.argv[1]) if len(sys.argv) > 1 else DEMO_POLICY)
