#!/usr/bin/env python3
"""Check an exported policy file against docs/POLICY_CONTRACT.md with torch.jit.load:
metadata keys and values, and the dtype, shape and sums of every output for B=1 and
B=4 (random inputs) and for the node's start-up probe (all-zero inputs).

    .venv/bin/python -m vla_demo.check_policy policy/demo_policy.pt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REQUIRED = {
    "contract_version": int, "name": str, "camera_names": list, "image_height": int,
    "image_width": int, "patch_grid": list, "joint_names": list, "action_dim": int,
    "chunk_length": int, "control_rate_hz": float, "tokenizer": dict, "normalization": dict,
}


def check_policy(path) -> dict:
    m = torch.jit.load(str(path))
    m.eval()
    meta = json.loads(m.metadata())
    for k, t in REQUIRED.items():
        assert k in meta, f"metadata lacks {k}"
        assert isinstance(meta[k], t), f"metadata {k} is {type(meta[k]).__name__}, expected {t.__name__}"
    assert meta["contract_version"] == 1
    A, T = meta["action_dim"], meta["chunk_length"]
    C, H, W = len(meta["camera_names"]), meta["image_height"], meta["image_width"]
    R, G = meta["patch_grid"]
    tok = meta["tokenizer"]
    assert tok["type"] == "char" and tok["pad_id"] == 0 and tok["unk_id"] == 1 and tok["lowercase"] is True
    L = tok["max_length"]
    assert len(meta["joint_names"]) == A
    for k in ("state_mean", "state_std", "action_mean", "action_std"):
        assert len(meta["normalization"][k]) == A, k
        if k.endswith("std"):
            assert min(meta["normalization"][k]) > 0, k

    g = torch.Generator().manual_seed(0)
    for B in (1, 4):
        for zero in (False, True):
            if zero:
                images = torch.zeros(B, C, H, W, 3, dtype=torch.uint8)
                state = torch.zeros(B, A)
                ids = torch.zeros(B, L, dtype=torch.int64)
                mask = torch.zeros(B, L, dtype=torch.bool)
            else:
                images = torch.randint(0, 256, (B, C, H, W, 3), generator=g, dtype=torch.uint8)
                state = torch.randn(B, A, generator=g)
                n = torch.randint(1, L + 1, (B,), generator=g)
                mask = torch.arange(L)[None, :] < n[:, None]
                ids = torch.randint(1, len(tok["vocab"]) + 2, (B, L), generator=g)
                ids[:, 0] = 2 + tok["vocab"].index("a")  # a tokenized text never starts with a space
                ids = ids * mask
            with torch.no_grad():
                out = m(images, state, ids, mask)
            assert isinstance(out, tuple) and len(out) == 3
            actions, tw, pm = out
            assert actions.dtype == torch.float32 and tuple(actions.shape) == (B, T, A), actions.shape
            assert tw.dtype == torch.float32 and tuple(tw.shape) == (B, L), tw.shape
            assert pm.dtype == torch.float32 and tuple(pm.shape) == (B, C, R, G), pm.shape
            for t in out:
                assert torch.isfinite(t).all()
            assert torch.allclose(pm.sum(dim=(2, 3)), torch.ones(B, C), atol=1e-4)
            assert (tw[~mask] == 0).all()
            if not zero:
                assert torch.allclose(tw.sum(1), torch.ones(B), atol=1e-4)
    print(f"check_policy: {path} OK ({meta['name']})")
    return meta


if __name__ == "__main__":
    from .node_process import DEMO_POLICY

    check_policy(Path(sys.argv[1]) if len(sys.argv) > 1 else DEMO_POLICY)
