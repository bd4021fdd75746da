"""Running a flow-matching policy (contract version 2, `kind: flow`) as the node runs it:
the seeded noise (docs/POLICY_CONTRACT.md; src/policy/noise.rs is the node's copy) and
the Euler integration of `velocity` from it."""

from __future__ import annotations

import math

import numpy as np
import torch

_MASK = (1 << 64) - 1
_TWO_53 = float(1 << 53)


def gaussian(seed: int, n: int) -> np.ndarray:
    """`n` standard normal float32 values from `seed`: SplitMix64 and Box-Muller, in
    double precision, as the node draws them."""
    state = seed & _MASK
    out: list[float] = []

    def draw() -> int:
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & _MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    while len(out) < n:
        u1 = ((draw() >> 11) + 1) / _TWO_53
        u2 = (draw() >> 11) / _TWO_53
        r = math.sqrt(-2.0 * math.log(u1))
        out += [r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)]
    return np.array(out[:n], dtype=np.float32)


def sample(module, meta: dict, images: list[torch.Tensor], state: torch.Tensor, token_ids: torch.Tensor,
           token_mask: torch.Tensor, seeds: list[int]):
    """The normalized chunks [B, chunk_length, actions] and `encode`'s outputs, element
    `k` integrated from the noise of `seeds[k]`."""
    flow = meta["flow"]
    steps, width = flow["num_steps"], flow.get("padded_action_dim") or len(meta["action_names"])
    t_len = meta["chunk_length"]
    context, extras = module.encode(images, state, token_ids, token_mask)
    x = torch.from_numpy(np.stack([gaussian(s, t_len * width).reshape(t_len, width) for s in seeds]))
    one = flow["time"] == "noise_at_one"
    dt = -1.0 / steps if one else 1.0 / steps
    for k in range(steps):
        t = torch.full((x.shape[0],), (1.0 if one else 0.0) + k * dt, dtype=torch.float32)
        x = x + dt * module.velocity(x, t, context)
    return x[:, :, :len(meta["action_names"])], extras
