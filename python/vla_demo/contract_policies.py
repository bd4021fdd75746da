"""Small TorchScript policies of contract version 2 (docs/POLICY_CONTRACT.md), for the
node's tests: each does something simple and visible with its inputs, so that a test can
tell from the commands, or from `vla_controller inspect`'s JSON, what the node fed it.

    m = MeanColour(meta)            # meta from metadata(...)
    save(m, "policy.pt")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn


def camera(name: str, width: int, height: int, resize: str = "area",
           expected: tuple[int, int] | None = None) -> dict:
    """One entry of `cameras`; `expected` is the (width, height) the policy expects."""
    return {"name": name, "width": width, "height": height, "resize": resize,
            "expected_width": expected[0] if expected else None,
            "expected_height": expected[1] if expected else None}


def char_tokenizer(vocab: str, max_length: int = 32) -> dict:
    return {"type": "char", "vocab": vocab, "max_length": max_length, "pad_id": 0, "unk_id": 1, "lowercase": True}


def metadata(cameras: list[dict], state_names: list[str], action_names: list[str] | None = None, *,
             action_mode: str = "absolute", tokenizer: dict | None = None, outputs: tuple[str, ...] = (),
             chunk_length: int = 10, control_rate_hz: float = 50.0, patch_grid: tuple[int, int] = (12, 16),
             name: str = "test policy") -> dict:
    """A version-2 `chunk` policy's metadata, normalization the identity."""
    action_names = list(state_names if action_names is None else action_names)
    return {
        "contract_version": 2, "name": name, "kind": "chunk", "cameras": cameras,
        "state_names": list(state_names), "action_names": action_names, "action_mode": action_mode,
        "chunk_length": chunk_length, "control_rate_hz": control_rate_hz, "tokenizer": tokenizer,
        "outputs": list(outputs), "patch_grid": list(patch_grid),
        "normalization": {"state_mean": [0.0] * len(state_names), "state_std": [1.0] * len(state_names),
                          "action_mean": [0.0] * len(action_names), "action_std": [1.0] * len(action_names)},
    }


class MeanColour(nn.Module):
    """Action `j` of every step: the state of the same name when there is one (0 when
    not, and 0 with `action_mode: delta`), plus `gain * (mean brightness of camera j % C
    - 0.5)`, plus `delta[j]`, plus `word_gain` for each real token whose id is `word_id`.
    With `action_mode: delta`, `gain=0` and `delta` give a chunk of exactly `delta`.

    Token weights (when `outputs` name them): uniform over the real tokens. Patch maps:
    each camera's mean brightness per patch of `patch_grid` (edges as the node cuts
    them), normalized to sum to 1."""

    def __init__(self, meta: dict, gain: float = 0.1, delta: list[float] | None = None,
                 word_id: int = -1, word_gain: float = 0.0):
        super().__init__()
        self.meta_json = json.dumps(meta, ensure_ascii=False)
        self.n_cams = len(meta["cameras"])
        self.chunk_length = meta["chunk_length"]
        self.token_weights = "token_weights" in meta["outputs"]
        self.patch_maps = "patch_maps" in meta["outputs"]
        self.rows, self.cols = meta["patch_grid"]
        self.gain = gain
        self.word_id = word_id
        self.word_gain = word_gain
        actions = meta["action_names"]
        states = meta["state_names"]
        absolute = meta["action_mode"] == "absolute"
        self.register_buffer("state_index", torch.tensor([states.index(a) if a in states and absolute else -1 for a in actions]))
        self.register_buffer("delta", torch.tensor(delta if delta is not None else [0.0] * len(actions)))

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta_json

    def forward(self, images: List[torch.Tensor], state: torch.Tensor, token_ids: torch.Tensor,
                token_mask: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        b = state.shape[0]
        means = torch.stack([img.to(torch.float32).mean(dim=(1, 2, 3)) / 255.0 for img in images], 1)  # [B, C]
        a = self.state_index.shape[0]
        cam = torch.arange(a) % self.n_cams
        base = torch.where(self.state_index >= 0, state[:, self.state_index.clamp(min=0)], torch.zeros(b, a))
        words = ((token_ids == self.word_id) & token_mask).to(torch.float32).sum(1, keepdim=True)
        action = base + self.gain * (means[:, cam] - 0.5) + self.delta[None, :] + self.word_gain * words
        actions = action[:, None, :].expand(b, self.chunk_length, a).contiguous()
        extras: Dict[str, torch.Tensor] = {}
        if self.token_weights:
            m = token_mask.to(torch.float32)
            extras["token_weights"] = m / m.sum(1, keepdim=True).clamp(min=1.0)
        if self.patch_maps:
            extras["patch_maps"] = torch.stack([self._patches(img) for img in images], 1)
        return actions, extras

    def _patches(self, img: torch.Tensor) -> torch.Tensor:
        b, h, w = img.shape[0], img.shape[1], img.shape[2]
        x = img.to(torch.float32).mean(3)
        out = torch.zeros(b, self.rows, self.cols)
        for r in range(self.rows):
            for q in range(self.cols):
                y0, y1 = r * h // self.rows, (r + 1) * h // self.rows
                x0, x1 = q * w // self.cols, (q + 1) * w // self.cols
                out[:, r, q] = x[:, y0:y1, x0:x1].mean(dim=(1, 2)) + 1.0
        return out / out.sum(dim=(1, 2), keepdim=True)


def save(module: nn.Module, path: Path | str) -> Path:
    """Scripts and saves `module`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def flow_metadata(cameras: list[dict], state_names: list[str], *, chunk_length: int = 25,
                  control_rate_hz: float = 50.0, num_steps: int = 10, guidance: str = "autograd",
                  name: str = "test flow policy") -> dict:
    """A version-2 `flow` policy's metadata (noise at t = 1, no language, identity
    normalization)."""
    meta = metadata(cameras, state_names, chunk_length=chunk_length, control_rate_hz=control_rate_hz, name=name)
    meta.update(kind="flow", flow={"num_steps": num_steps, "time": "noise_at_one", "guidance": guidance})
    return meta


class RampFlow(nn.Module):
    """A flow-matching policy whose chunk ramps from the state towards `goal`:
    `a_i = s + (goal - s) (1 - exp(-(i + 1) / tau))`. `encode` returns that chunk as the
    context; `velocity` is the exact flow from noise at t = 1 to it, `(x_t - a) / t`, so
    the node's integration ends on it and real-time chunking's guidance has a gradient
    to follow."""

    def __init__(self, meta: dict, goal: list[float], tau: float = 6.0):
        super().__init__()
        self.meta_json = json.dumps(meta, ensure_ascii=False)
        steps = torch.arange(meta["chunk_length"], dtype=torch.float32) + 1.0
        self.register_buffer("ramp", 1.0 - torch.exp(-steps / tau))
        self.register_buffer("goal", torch.tensor(goal, dtype=torch.float32))

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta_json

    @torch.jit.export
    def encode(self, images: List[torch.Tensor], state: torch.Tensor, token_ids: torch.Tensor,
               token_mask: torch.Tensor) -> Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]:
        chunk = state[:, None, :] + (self.goal[None, None, :] - state[:, None, :]) * self.ramp[None, :, None]
        extras: Dict[str, torch.Tensor] = {}
        return [chunk], extras

    @torch.jit.export
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, context: List[torch.Tensor]) -> torch.Tensor:
        return (x_t - context[0]) / t[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
