"""The small pi0-style demo policy, written to be `torch.jit.script`-ed.

Design (see /work/shared/PLATFORM.md, "Training a small demo policy on this CPU": a
plain dot-product attention from a text query to the patches did not learn to bind
the colour word; FiLM + a per-patch scorer + softmax over patches did):

- images [B, 3, 96, 128, 3] uint8 -> one shared conv encoder -> a 12 x 16 grid of
  patch features per camera, plus a learned camera and per-camera position embedding;
- instruction characters -> embedding + two 1-D convs (a receptive field of five
  characters, cut at spaces, so a token only knows its own word) -> attention
  pooling over the non-space tokens: the pooling
  weights are `token_weights`; the pooled vector says *which* item. A masked mean of
  the same features (the bag of characters) carries the verb for the head;
- FiLM of the patch features by the pooled text vector, a per-patch scorer, softmax
  over the 192 patches of each camera: `patch_maps`;
- the map-weighted patch centre and map-weighted patch features of each camera, the
  state and the verb vector -> MLP -> the target joint vector (normalized), plus a
  linear path from the patch centres alone to the target;
- actions[i] = state + (target - state) * (1 - exp(-(i+1)/8)), in normalized units
  (state and action share mean and std, so normalization commutes with this ramp).

The only way from the image to the target goes through the patch maps, so the maps
have to find the instructed item for the action to be right.

Two details decide whether it learns at all within a few thousand steps (measured:
without them the loss sat at the "average target" plateau for 1000+ steps): He-init
convolutions with zero bias on centred pixels (the default init leaves patches nearly
indistinguishable, so the maps start uniform to 1e-4), and the linear path from the
map centroids to the target (a direct gradient to the scorer, as when the target is
the image position itself).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class DemoPolicy(nn.Module):
    def __init__(self, metadata_json: str, vocab_size: int, n_cams: int = 3,
                 grid_rows: int = 12, grid_cols: int = 16, action_dim: int = 6,
                 chunk_length: int = 25, dim: int = 48, conv1: int = 24, hidden: int = 256,
                 ramp_tau: float = 8.0, logit_scale: float = 4.0, space_id: int = -1):
        super().__init__()
        self.meta_json = metadata_json
        self.n_cams = n_cams
        self.grid_rows = grid_rows
        self.grid_cols = grid_cols
        self.action_dim = action_dim
        n_patches = grid_rows * grid_cols

        # 96 x 128 -> 24 x 32 -> 12 x 16: each patch is 8 x 8 input pixels.
        self.enc1 = nn.Conv2d(3, conv1, kernel_size=4, stride=4)
        self.enc2 = nn.Conv2d(conv1, dim, kernel_size=3, stride=2, padding=1)
        self.enc3 = nn.Conv2d(dim, dim, kernel_size=1)
        self.cam_pos = nn.Parameter(torch.randn(n_cams, n_patches, dim) * 0.02)

        # Token 0 is padding. Spaces (token `space_id`) cut the text convolutions, so a
        # token's features come from its own word only, and are not pooled.
        self.space_id = space_id
        self.tok_emb = nn.Embedding(vocab_size + 2, dim, padding_idx=0)
        self.tconv1 = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.tconv2 = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.tok_score = nn.Linear(dim, 1)

        # Learned sharpness of the patch softmax, started sharp enough that the maps
        # differ from scene to scene from the first step.
        self.log_scale = nn.Parameter(torch.tensor(float(logit_scale)).log())
        self.film = nn.Linear(dim, 2 * dim)
        self.score1 = nn.Linear(dim, dim)
        self.score2 = nn.Linear(dim, 1)

        head_in = n_cams * (2 + dim) + action_dim + dim
        self.head = nn.Sequential(
            nn.Linear(head_in, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, action_dim),
        )

        # He init with zero bias: the default init (plus the biases) shrinks the
        # differences between patches to ~1% of the features' common part, so the maps
        # start uniform to 1e-4 with no useful gradient for 1000+ steps.
        for conv in (self.enc1, self.enc2, self.enc3):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

        # A linear path from the map centroids to the target: joint targets are smooth,
        # nearly linear functions of where the item is in each view, so the scorer gets
        # a direct, consistent gradient from the first step (without it the maps stay
        # uniform for thousands of steps while the MLP learns to read them).
        self.head_lin = nn.Linear(n_cams * 2, action_dim)

        rows = (torch.arange(grid_rows, dtype=torch.float32) + 0.5) / grid_rows * 2 - 1
        cols = (torch.arange(grid_cols, dtype=torch.float32) + 0.5) / grid_cols * 2 - 1
        gy, gx = torch.meshgrid(rows, cols, indexing="ij")
        self.register_buffer("patch_xy", torch.stack([gx.reshape(-1), gy.reshape(-1)], 1))
        steps = torch.arange(chunk_length, dtype=torch.float32) + 1.0
        self.register_buffer("ramp", 1.0 - torch.exp(-steps / ramp_tau))

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta_json

    def encode_text(self, token_ids: torch.Tensor, token_mask: torch.Tensor):
        m = token_mask.to(torch.float32)  # [B, L]
        word = token_mask & (token_ids != self.space_id)
        mw = word.to(torch.float32)[:, None, :]
        e = self.tok_emb(token_ids).transpose(1, 2) * mw  # [B, D, L]
        h = F.relu(self.tconv1(e)) * mw
        h = (h + F.relu(self.tconv2(h))) * mw
        h = h.transpose(1, 2)  # [B, L, D]
        # Without the cut, the English pooling settled on the space between colour and
        # shape word, whose five-character window sees both (measured: 42% of top
        # tokens inside the two words in English, 98% in Chinese).
        logits = self.tok_score(h).squeeze(-1).masked_fill(~word, -1e9)
        # Softmax, then zero outside words and renormalized: an all-padding input (the
        # node's start-up check) gives zeros instead of NaN.
        w = torch.softmax(logits, dim=1) * word.to(torch.float32)
        w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-9)
        referent = torch.einsum("bl,bld->bd", w, h)
        context = h.sum(dim=1) / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        return w, referent, context

    def forward(self, images: torch.Tensor, state: torch.Tensor, token_ids: torch.Tensor,
                token_mask: torch.Tensor):
        actions, token_weights, patch_maps, _ = self.perceive(images, state, token_ids, token_mask)
        return actions, token_weights, patch_maps

    def perceive(self, images: torch.Tensor, state: torch.Tensor, token_ids: torch.Tensor,
                 token_mask: torch.Tensor):
        """The chunk, token weights, patch maps and the head's input (map-weighted patch
        centres, then map-weighted features, state and the bag of characters)."""
        b = images.shape[0]
        c = self.n_cams
        x = images.to(torch.float32) * (1.0 / 255.0) - 0.5  # [B, C, H, W, 3], centred
        x = x.permute(0, 1, 4, 2, 3).reshape(b * c, 3, x.shape[2], x.shape[3])
        x = F.relu(self.enc1(x))
        x = F.relu(self.enc2(x))
        x = self.enc3(x)  # [B*C, D, 12, 16]
        d = x.shape[1]
        feats = x.reshape(b, c, d, -1).transpose(2, 3) + self.cam_pos[None]  # [B, C, P, D]

        token_weights, referent, context = self.encode_text(token_ids, token_mask)

        gamma_beta = self.film(referent)
        gamma = gamma_beta[:, :d][:, None, None, :]
        beta = gamma_beta[:, d:][:, None, None, :]
        hmod = F.relu(feats * (1.0 + gamma) + beta)
        logits = self.score2(F.relu(self.score1(hmod))).squeeze(-1) * self.log_scale.exp()
        maps = torch.softmax(logits, dim=-1)

        where = torch.einsum("bcp,pk->bck", maps, self.patch_xy)  # [B, C, 2]
        what = torch.einsum("bcp,bcpd->bcd", maps, feats)  # [B, C, D]
        head_in = torch.cat([where.reshape(b, -1), what.reshape(b, -1), state, context], dim=1)
        target = self.head(head_in) + self.head_lin(where.reshape(b, -1))  # normalized [B, A]

        actions = state[:, None, :] + (target - state)[:, None, :] * self.ramp[None, :, None]
        patch_maps = maps.reshape(b, c, self.grid_rows, self.grid_cols)
        return actions, token_weights, patch_maps, head_in


class FlowDemoPolicy(DemoPolicy):
    """The demo policy as a flow-matching policy (contract version 2, `kind: flow`),
    pi0-style: `encode` runs the perception and language of DemoPolicy once (the same
    patch-map bottleneck, so the only way from an image to the actions is still
    through the maps), and an action expert denoises the chunk in `velocity`.

    The expert is parameterized by the clean chunk it predicts (x-prediction): from
    `x_t`, `t` and the context it estimates the chunk `a_hat` (the ramp towards the
    head's target, plus an MLP of `x_t`, `t` and the context), and returns the velocity
    of the straight path from noise at t = 1 through `x_t` to `a_hat`,
    `(x_t - a_hat) / t`: the flow-matching field for that estimate, which the node
    integrates from noise (`time: noise_at_one`, as pi0 and SmolVLA). Training minimizes
    the distance of `a_hat` to the expert chunk at `t` drawn as pi0 draws it, the
    flow-matching loss in its x-prediction form (the velocity error times t). Gradients
    flow from the velocity to `x_t` (`guidance: autograd`), as real-time chunking's
    guided inpainting needs."""

    def __init__(self, metadata_json: str, vocab_size: int, chunk_length: int = 25,
                 action_dim: int = 6, expert_hidden: int = 256, time_features: int = 8, **kw):
        super().__init__(metadata_json, vocab_size, action_dim=action_dim, chunk_length=chunk_length, **kw)
        cond = self.n_cams * (2 + self.film.in_features) + action_dim + self.film.in_features
        flat = chunk_length * action_dim
        self.expert = nn.Sequential(
            nn.Linear(flat + cond + 2 * time_features, expert_hidden), nn.ReLU(),
            nn.Linear(expert_hidden, expert_hidden), nn.ReLU(),
            nn.Linear(expert_hidden, flat),
        )
        # Zero at the start: the expert begins as the deterministic ramp and learns the
        # correction from x_t, so the perception learns as fast as DemoPolicy's.
        nn.init.zeros_(self.expert[4].weight)
        nn.init.zeros_(self.expert[4].bias)
        # Sine-cosine features of t, periods from 4 down to 4e-3 as pi0's time embedding.
        self.register_buffer("t_freq", 2 * torch.pi / torch.logspace(0.0, -3.0, time_features, base=10.0) / 4.0)

    def forward(self, images: torch.Tensor, state: torch.Tensor, token_ids: torch.Tensor,
                token_mask: torch.Tensor):
        raise RuntimeError("a flow policy: the node calls encode and velocity")

    @torch.jit.export
    def encode(self, images: List[torch.Tensor], state: torch.Tensor, token_ids: torch.Tensor,
               token_mask: torch.Tensor) -> Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]:
        """The context [head input, ramp chunk], token weights and patch maps."""
        ramp_chunk, token_weights, patch_maps, head_in = self.perceive(
            torch.stack(images, 1), state, token_ids, token_mask)
        extras: Dict[str, torch.Tensor] = {"token_weights": token_weights, "patch_maps": patch_maps}
        return [head_in, ramp_chunk], extras

    @torch.jit.export
    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, context: List[torch.Tensor]) -> torch.Tensor:
        """The clean chunk estimated from x_t at time t."""
        b = x_t.shape[0]
        angle = t[:, None] * self.t_freq[None, :]
        inp = torch.cat([x_t.reshape(b, -1), context[0], torch.sin(angle), torch.cos(angle)], dim=1)
        return context[1] + self.expert(inp).reshape(x_t.shape)

    @torch.jit.export
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, context: List[torch.Tensor]) -> torch.Tensor:
        # The node's Euler steps stop at t = 1 / num_steps; the floor only keeps a
        # caller's t = 0 finite.
        return (x_t - self.denoise(x_t, t, context)) / t.clamp_min(1e-3)[:, None, None]
