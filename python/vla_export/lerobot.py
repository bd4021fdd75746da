#!/usr/bin/env python3
"""Export a LeRobot policy to a policy file the node runs (docs/POLICY_CONTRACT.md, v2).

    python -m vla_export.lerobot outputs/train/act_so101/checkpoints/last/pretrained_model \\
        -o act_so101.pt

Reads the policy directory exactly as LeRobot 0.4.x saves it (`config.json`,
`model.safetensors`, `policy_preprocessor.json` and `policy_postprocessor.json` with their
`*_normalizer_processor.safetensors` / `*_unnormalizer_processor.safetensors` statistics),
through LeRobot's own loaders, and writes one TorchScript file that:

- takes each camera as uint8 RGB `[B, H, W, 3]` at the size the policy was trained at
  (the feature's shape in `config.json`), one per LeRobot image feature, named after the
  feature key (`observation.images.top` -> `top`);
- does what LeRobot's inference path does before the model (`prepare_observation_for_inference`:
  /255 and HWC -> CHW; the preprocessor's normalizer step, any LeRobot normalization mode);
- ACT (`kind: chunk`): returns the whole chunk of `predict_action_chunk` (`chunk_size`
  actions, see `chunk_length` below) after the postprocessor's unnormalizer, so the
  metadata's normalization is the identity and the node's actions are joint targets in
  the dataset's units;
- SmolVLA (`kind: flow`): `encode` is SmolVLA up to its action expert (images letterboxed
  and scaled as SmolVLA does, the instruction's tokens, the state: the VLM prefix's
  key/value cache out), `velocity` its `denoise_step`; the node integrates from noise as
  `sample_actions` does, and unnormalizes with the metadata's action statistics
  (LeRobot's). The instruction's tokenizer travels in the file (`tokenizer_json`), with
  SmolVLA's appended newline as its normalizer. x_t is LeRobot's padded action vector
  (`flow.padded_action_dim` wide); the chunk is its first columns.
- pi0 and pi0.5 are refused: LeRobot runs them only on a patched transformers that no
  package registry serves.

Joint names and the control rate come from the training dataset's `meta/info.json` when
it can be found (`--dataset-root`, else the `dataset.root` or `$HF_LEROBOT_HOME/<repo_id>`
named in `train_config.json`); `--state-names`, `--action-names` and `--fps` give or
override them. Without names the joints are called `joint_0`, `joint_1`, ...; without a
rate the export stops: a guessed rate would play the chunk at the wrong speed. When the
robot's driver reports joints in other units than the dataset was recorded in (radians
against LeRobot's degrees or -100..100 range), `--robot-to-dataset-scale` and
`--robot-to-dataset-offset` put that linear conversion in the metadata's normalization,
which the node applies to the state and undoes on the actions.

`chunk_length` is LeRobot's `chunk_size`, the whole chunk `predict_action_chunk` returns.
`n_action_steps` (how many of them LeRobot's own loop executes before it infers again) and
`temporal_ensemble_coeff` are execution choices, made on the node by its `smoothing`
parameters; the export prints the matching ones.

After writing, the file is loaded with `torch.jit.load` in a fresh Python process and its
chunks are compared with LeRobot's own pipeline (preprocessor, `predict_action_chunk`,
postprocessor; for SmolVLA with the same noise and instructions tokenized by the file's
tokenizer) on random observations; the export fails if they differ by more than
`--tolerance`. Run it in the environment LeRobot was trained in (it imports lerobot).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

# Policy types whose `predict_action_chunk` is a pure function of one observation, so that
# one traced forward reproduces it. (Diffusion keeps an observation history and samples
# noise inside.)
CHUNK_POLICY_TYPES = ("act",)
# Flow-matching policies, exported as `kind: flow`: their VLM prefix becomes `encode`,
# their action expert's denoising step `velocity`.
FLOW_POLICY_TYPES = ("smolvla",)
# Why the others cannot be exported (yet).
UNSUPPORTED_POLICY_TYPES = {
    "pi0": "LeRobot's pi0 runs only on a patched transformers (its `transformers.models.siglip.check`), "
           "which no package registry serves",
    "pi05": "LeRobot's pi0.5 runs only on a patched transformers, which no package registry serves",
    "diffusion": "diffusion keeps an observation history and samples its noise inside the policy",
}

# Preprocessor and postprocessor steps that do nothing the node must reproduce beyond
# what the export bakes in: a batch dimension, a device move, a key rename (used to name
# the cameras), and the (un)normalizer (baked into the module).
PASSIVE_STEPS = ("to_batch_processor", "device_processor", "rename_observations_processor")
NORMALIZER_STEP = "normalizer_processor"
UNNORMALIZER_STEP = "unnormalizer_processor"
# The instruction's steps, carried into the policy file's tokenizer (metadata `tokenizer`).
TOKENIZER_STEP = "tokenizer_processor"
NEWLINE_STEP = "smolvla_new_line_processor"

RESIZE_MODES = ("area", "bilinear", "letterbox")
DEFAULT_PATCH_GRID = (12, 16)


class ExportError(Exception):
    """Something in the policy directory or the options the export cannot honour."""


# --------------------------------------------------------------------------------------
# Normalization, as LeRobot's NormalizerProcessorStep / UnnormalizerProcessorStep do it.


class FeatureNorm(nn.Module):
    """One feature's LeRobot (un)normalization (lerobot/processor/normalize_processor.py,
    `_apply_transform`), the same formula and order of operations per mode, so that the
    exported module matches LeRobot to float32 rounding:

    - MEAN_STD: (x - mean) / (std + eps); inverse x * std + mean
    - MIN_MAX, QUANTILES (q01, q99), QUANTILE10 (q10, q90), with lo, hi the pair and
      d = hi - lo (eps where 0): 2 * (x - lo) / d - 1; inverse (x + 1) / 2 * d + lo for
      MIN_MAX and (x + 1) * d / 2 + lo for the quantile modes
    - IDENTITY, or no statistics for the feature: x
    """

    IDENTITY, MEAN_STD, MIN_MAX, QUANTILE = 0, 1, 2, 3

    def __init__(self, mode: str, stats: Dict[str, Tensor] | None, eps: float, inverse: bool):
        super().__init__()
        self.inverse = inverse
        self.eps = float(eps)
        lo = hi = torch.zeros(1)
        if stats is None or mode == "IDENTITY":
            self.mode = self.IDENTITY
        elif mode == "MEAN_STD":
            self.mode = self.MEAN_STD
            lo, hi = _stat(stats, "mean", mode), _stat(stats, "std", mode)
        elif mode == "MIN_MAX":
            self.mode = self.MIN_MAX
            lo, hi = _stat(stats, "min", mode), _stat(stats, "max", mode)
        elif mode in ("QUANTILES", "QUANTILE10"):
            self.mode = self.QUANTILE
            names = ("q01", "q99") if mode == "QUANTILES" else ("q10", "q90")
            lo, hi = _stat(stats, names[0], mode), _stat(stats, names[1], mode)
        else:
            raise ExportError(f"normalization mode {mode} is not one LeRobot 0.4 defines")
        self.register_buffer("lo", lo.to(torch.float32).clone())
        self.register_buffer("hi", hi.to(torch.float32).clone())

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == self.IDENTITY:
            return x
        if self.mode == self.MEAN_STD:
            mean, std = self.lo, self.hi
            if self.inverse:
                return x * std + mean
            return (x - mean) / (std + self.eps)
        d = self.hi - self.lo
        d = torch.where(d == 0, torch.full_like(d, self.eps), d)
        if self.mode == self.MIN_MAX:
            if self.inverse:
                return (x + 1) / 2 * d + self.lo
            return 2 * (x - self.lo) / d - 1
        if self.inverse:
            return (x + 1.0) * d / 2.0 + self.lo
        return 2.0 * (x - self.lo) / d - 1.0


    def affine(self) -> Tuple[List[float], List[float]]:
        """An unnormalization as (std, mean) with x * std + mean, the form the contract's
        metadata normalization takes (exact for MEAN_STD; the same map, rounded
        differently, for the others)."""
        assert self.inverse
        if self.mode == self.IDENTITY:
            return [], []
        if self.mode == self.MEAN_STD:
            return self.hi.tolist(), self.lo.tolist()
        d = self.hi - self.lo
        d = torch.where(d == 0, torch.full_like(d, self.eps), d)
        return (d / 2).tolist(), (self.lo + d / 2).tolist()


def _stat(stats: Dict[str, Tensor], name: str, mode: str) -> Tensor:
    if name not in stats:
        raise ExportError(f"{mode} normalization needs the statistic '{name}', which the checkpoint lacks")
    return stats[name]


def feature_norm(step, key: str, inverse: bool) -> FeatureNorm:
    """The FeatureNorm that LeRobot's (un)normalizer `step` applies to feature `key`."""
    feature = step.features.get(key)
    if feature is None:
        return FeatureNorm("IDENTITY", None, step.eps, inverse)
    if not inverse and step.normalize_observation_keys is not None and key not in step.normalize_observation_keys:
        return FeatureNorm("IDENTITY", None, step.eps, inverse)
    mode = step.norm_map.get(feature.type)
    mode = "IDENTITY" if mode is None else mode.value
    flat = step.state_dict()
    stats = {k.rsplit(".", 1)[1]: v for k, v in flat.items() if k.rsplit(".", 1)[0] == key}
    return FeatureNorm(mode, stats or None, step.eps, inverse)


# --------------------------------------------------------------------------------------
# The checkpoint.


@dataclass
class Checkpoint:
    """A LeRobot policy directory, loaded by LeRobot."""

    path: Path
    config: object
    policy: nn.Module
    preprocessor: object
    postprocessor: object
    normalizer: object
    unnormalizer: object
    rename_map: Dict[str, str]
    # The preprocessor's TokenizerProcessorStep, and whether a step before it ends the
    # instruction with a newline (SmolVLA's).
    tokenizer: object | None = None
    newline: bool = False

    @property
    def image_keys(self) -> List[str]:
        """The cameras: the policy's image features, less SmolVLA's `empty_cameras`
        placeholders (which the policy fills itself)."""
        return [k for k in self.config.image_features if not k.startswith("observation.images.empty_camera_")]

    def image_hw(self, key: str) -> Tuple[int, int]:
        shape = tuple(self.config.image_features[key].shape)
        if len(shape) != 3 or shape[0] != 3:
            raise ExportError(f"image feature {key} has shape {list(shape)}; the node gives RGB images [3, H, W]")
        return int(shape[1]), int(shape[2])

    def robot_key(self, policy_key: str) -> str:
        """The observation key the robot (and its dataset) records for a policy key."""
        for robot, policy in self.rename_map.items():
            if policy == policy_key:
                return robot
        return policy_key


def load_checkpoint(path: Path) -> Checkpoint:
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors
    from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ExportError(f"{path} has no config.json: give the `pretrained_model` folder of a LeRobot checkpoint")
    pre_file = f"{POLICY_PREPROCESSOR_DEFAULT_NAME}.json"
    post_file = f"{POLICY_POSTPROCESSOR_DEFAULT_NAME}.json"
    for f in (pre_file, post_file):
        if not (path / f).is_file():
            raise ExportError(
                f"{path} has no {f}: a checkpoint saved before LeRobot 0.4 keeps its normalization inside "
                "model.safetensors; convert it with `python -m lerobot.processor.migrate_policy_normalization` first"
            )
    config = PreTrainedConfig.from_pretrained(path, local_files_only=True)
    config.device = "cpu"
    policy = get_policy_class(config.type).from_pretrained(path, config=config, local_files_only=True)
    policy.eval()
    # As LeRobot's record loop loads them, on the CPU.
    cpu = {"device_processor": {"device": "cpu"}}
    pre, post = make_pre_post_processors(
        config, pretrained_path=str(path), preprocessor_overrides=cpu, postprocessor_overrides=cpu
    )

    found: Dict[str, object] = {}
    rename_map: Dict[str, str] = {}
    for pipeline, known in ((pre, (NORMALIZER_STEP, TOKENIZER_STEP, NEWLINE_STEP)), (post, (UNNORMALIZER_STEP,))):
        for step in pipeline.steps:
            name = _registry_name(step)
            if name in known:
                found[name] = step
            elif name == "rename_observations_processor":
                rename_map.update(step.rename_map)
            elif name not in PASSIVE_STEPS:
                raise ExportError(
                    f"the {pipeline.name} has a step '{name}' that the export does not know how to carry "
                    f"into the policy file (it knows {', '.join(PASSIVE_STEPS + known)})"
                )
    if NORMALIZER_STEP not in found or UNNORMALIZER_STEP not in found:
        raise ExportError(f"{path}: the preprocessor needs a {NORMALIZER_STEP} and the postprocessor an {UNNORMALIZER_STEP}")
    if NEWLINE_STEP in found and TOKENIZER_STEP not in found:
        raise ExportError(f"{path}: the preprocessor ends instructions with a newline but tokenizes none")
    return Checkpoint(path, config, policy, pre, post, found[NORMALIZER_STEP], found[UNNORMALIZER_STEP], rename_map,
                      found.get(TOKENIZER_STEP), NEWLINE_STEP in found)


def _registry_name(step) -> str:
    # ProcessorStepRegistry.register sets it on the class; it is the name in the .json.
    return getattr(type(step), "_registry_name", type(step).__name__)


# --------------------------------------------------------------------------------------
# The exported module.


class LeRobotObservation(nn.Module):
    """The node's inputs as LeRobot's policies take them: uint8 HWC images by feature key
    as `prepare_observation_for_inference` makes them (float32 / 255, then a contiguous
    CHW: the convolutions' rounding depends on the memory layout), and the state, each
    through the preprocessor's normalizer."""

    def __init__(self, ckpt: Checkpoint):
        super().__init__()
        from lerobot.utils.constants import OBS_STATE

        self.image_keys = ckpt.image_keys
        self.state_key = OBS_STATE
        self.image_norms = nn.ModuleList(feature_norm(ckpt.normalizer, k, inverse=False) for k in self.image_keys)
        self.state_norm = feature_norm(ckpt.normalizer, OBS_STATE, inverse=False)

    def forward(self, images: List[Tensor], state: Tensor) -> Dict[str, Tensor]:
        batch = {self.state_key: self.state_norm(state)}
        for key, image, norm in zip(self.image_keys, images, self.image_norms):
            x = image.to(torch.float32) / 255
            batch[key] = norm(x.permute(0, 3, 1, 2).contiguous())
        return batch


class LeRobotChunk(nn.Module):
    """LeRobot's inference path for one observation, traced once: uint8 HWC images and
    the raw state in, the unnormalized chunk out."""

    def __init__(self, ckpt: Checkpoint):
        super().__init__()
        from lerobot.utils.constants import ACTION

        self.policy = ckpt.policy
        self.observation = LeRobotObservation(ckpt)
        self.action_unnorm = feature_norm(ckpt.unnormalizer, ACTION, inverse=True)

    def forward(self, images: List[Tensor], state: Tensor) -> Tensor:
        return self.action_unnorm(self.policy.predict_action_chunk(self.observation(images, state)))


class SmolVLAEncode(nn.Module):
    """SmolVLA up to its action expert: what `SmolVLAPolicy._get_action_chunk` and
    `VLAFlowMatching.sample_actions` do before their denoising loop. Returns the context
    `denoise_step` reads: the prefix's padding mask, then each layer's key and value cache."""

    def __init__(self, ckpt: Checkpoint):
        super().__init__()
        self.policy = ckpt.policy
        self.observation = LeRobotObservation(ckpt)

    def forward(self, images: List[Tensor], state: Tensor, token_ids: Tensor, token_mask: Tensor) -> List[Tensor]:
        from lerobot.policies.smolvla.modeling_smolvla import make_att_2d_masks

        batch = self.observation(images, state)
        images_, image_masks = self.policy.prepare_images(batch)
        model = self.policy.model
        embs, pad_masks, att_masks = model.embed_prefix(
            images_, image_masks, token_ids, token_mask, state=self.policy.prepare_state(batch)
        )
        _, cache = model.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(pad_masks, att_masks),
            position_ids=torch.cumsum(pad_masks, dim=1) - 1,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=True,
            fill_kv_cache=True,
        )
        context = [pad_masks]
        for layer in sorted(cache):
            context += [cache[layer]["key_states"], cache[layer]["value_states"]]
        return context


class SmolVLAVelocity(nn.Module):
    """SmolVLA's `denoise_step` on the context of SmolVLAEncode."""

    def __init__(self, ckpt: Checkpoint):
        super().__init__()
        self.model = ckpt.policy.model

    def forward(self, x_t: Tensor, t: Tensor, context: List[Tensor]) -> Tensor:
        cache = {layer: {"key_states": context[1 + 2 * layer], "value_states": context[2 + 2 * layer]}
                 for layer in range((len(context) - 1) // 2)}
        return self.model.denoise_step(prefix_pad_masks=context[0], past_key_values=cache, x_t=x_t, timestep=t)


def check_observation(images: List[Tensor], state: Tensor, heights: List[int], widths: List[int], state_dim: int):
    """The contract's inputs, with messages that say what was expected (a traced module
    would fail deep inside)."""
    if len(images) != len(heights):
        raise RuntimeError("expected {} camera images, got {}".format(len(heights), len(images)))
    for i, image in enumerate(images):
        h, w = heights[i], widths[i]
        if image.dtype != torch.uint8 or image.dim() != 4 or image.size(1) != h or image.size(2) != w or image.size(3) != 3:
            raise RuntimeError("camera {}: expected uint8 [B, {}, {}, 3], got {} {}".format(i, h, w, image.dtype, image.shape))
    if state.dim() != 2 or state.size(1) != state_dim:
        raise RuntimeError("expected state [B, {}], got {}".format(state_dim, state.shape))


class ContractChunkPolicy(nn.Module):
    """The file's top level for `kind: chunk`: `forward` and `metadata`."""

    def __init__(self, core: nn.Module, metadata: str, heights: List[int], widths: List[int], state_dim: int):
        super().__init__()
        self.core = core
        self.meta = metadata
        self.heights = heights
        self.widths = widths
        self.state_dim = state_dim

    def forward(
        self, images: List[Tensor], state: Tensor, token_ids: Tensor, token_mask: Tensor
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        check_observation(images, state, self.heights, self.widths, self.state_dim)
        outputs: Dict[str, Tensor] = {}
        return self.core(images, state.to(torch.float32)), outputs

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta


class ContractFlowPolicy(nn.Module):
    """The file's top level for `kind: flow`: `encode`, `velocity`, `metadata` and the
    tokenizer (`tokenizer_json`, named in the metadata)."""

    def __init__(self, encode_core: nn.Module, velocity_core: nn.Module, metadata: str, tokenizer: str,
                 heights: List[int], widths: List[int], state_dim: int, max_length: int, chunk_length: int,
                 dim: int):
        super().__init__()
        self.encode_core = encode_core
        self.velocity_core = velocity_core
        self.meta = metadata
        self.tokenizer = tokenizer
        self.heights = heights
        self.widths = widths
        self.state_dim = state_dim
        self.max_length = max_length
        self.chunk_length = chunk_length
        self.dim = dim

    @torch.jit.export
    def encode(
        self, images: List[Tensor], state: Tensor, token_ids: Tensor, token_mask: Tensor
    ) -> Tuple[List[Tensor], Dict[str, Tensor]]:
        check_observation(images, state, self.heights, self.widths, self.state_dim)
        b = state.size(0)
        if token_ids.dim() != 2 or token_ids.size(0) != b or token_ids.size(1) != self.max_length \
                or token_ids.dtype != torch.int64 or token_mask.dtype != torch.bool or token_mask.shape != token_ids.shape:
            raise RuntimeError("expected token_ids int64 and token_mask bool, both [{}, {}], got {} {} and {} {}".format(
                b, self.max_length, token_ids.dtype, token_ids.shape, token_mask.dtype, token_mask.shape))
        # The VLM's vision tower loops over the batch in Python, which a trace unrolls:
        # the encoder was traced for one observation and runs once per observation.
        state = state.to(torch.float32)
        parts: List[List[Tensor]] = []
        for i in range(b):
            parts.append(self.encode_core([image[i:i + 1] for image in images], state[i:i + 1],
                                          token_ids[i:i + 1], token_mask[i:i + 1]))
        context: List[Tensor] = []
        for k in range(len(parts[0])):
            context.append(torch.cat([p[k] for p in parts], 0))
        outputs: Dict[str, Tensor] = {}
        return context, outputs

    @torch.jit.export
    def velocity(self, x_t: Tensor, t: Tensor, context: List[Tensor]) -> Tensor:
        if x_t.dim() != 3 or x_t.size(1) != self.chunk_length or x_t.size(2) != self.dim:
            raise RuntimeError("expected x_t [B, {}, {}], got {}".format(self.chunk_length, self.dim, x_t.shape))
        if t.dim() != 1 or t.size(0) != x_t.size(0):
            raise RuntimeError("expected t [{}], got {}".format(x_t.size(0), t.shape))
        return self.velocity_core(x_t, t, context)

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta

    @torch.jit.export
    def tokenizer_json(self) -> str:
        return self.tokenizer


def _example_inputs(heights: List[int], widths: List[int], state_dim: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (batch, h, w, 3), generator=g, dtype=torch.uint8) for h, w in zip(heights, widths)]
    return images, torch.randn(batch, state_dim, generator=g)


def trace_core(core: LeRobotChunk, heights: List[int], widths: List[int], state_dim: int) -> torch.jit.ScriptModule:
    """Traces at batch 2, then checks batch 1 and 3 against the eager module: the node
    runs single observations and batches of occluded copies through the same file."""
    images, state = _example_inputs(heights, widths, state_dim, 2, seed=1)
    with torch.no_grad(), warnings.catch_warnings():
        # ACT turns some sizes into Python numbers; the batch checks below are the test.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(core, (images, state), check_trace=False)
        for b in (1, 3):
            images, state = _example_inputs(heights, widths, state_dim, b, seed=10 + b)
            want, got = core(images, state), traced(images, state)
            if want.shape != got.shape or not torch.allclose(want, got, rtol=0, atol=1e-5):
                raise ExportError(f"the traced policy does not reproduce batch size {b}: it is not traceable as is")
    return traced


def method_graphs(module: torch.jit.ScriptModule):
    """Every method graph of a TorchScript module and its submodules."""
    for name in module._c._method_names():
        yield module._c._get_method(name).graph
    for child in module.children():
        yield from method_graphs(child)


def make_device_agnostic(module: torch.jit.ScriptModule) -> None:
    """Tracing writes the device it ran on into the graph wherever the model makes a
    tensor (`torch.zeros(..., device=batch.device)` becomes `device=torch.device("cpu")`),
    and loading the file on another device does not change those. Each such constant
    becomes the device of the graph's first tensor input, so that the file runs where its
    inputs are (the node's `device` parameter)."""
    for graph in method_graphs(module):
        constants = [n for n in graph.findAllNodes("prim::Constant") if n.output().type().kind() == "DeviceObjType"]
        if not constants:
            continue
        tensor_input = next((i for i in graph.inputs() if i.type().kind() == "TensorType"), None)
        if tensor_input is None:
            raise ExportError("a traced graph makes tensors on a fixed device and takes no tensor to follow")
        device = graph.create("prim::device", [tensor_input])
        device.output().setType(constants[0].output().type())
        device.insertBefore(next(iter(graph.nodes())))
        for constant in constants:
            constant.output().replaceAllUsesWith(device.output())
            constant.destroy()
        torch._C._jit_pass_lint(graph)


# --------------------------------------------------------------------------------------
# Metadata.


@dataclass
class Options:
    output: Path
    name: str | None = None
    dataset_root: Path | None = None
    state_names: List[str] | None = None
    action_names: List[str] | None = None
    camera_names: List[str] | None = None
    fps: float | None = None
    resize: str = "area"
    any_camera_size: bool = False
    patch_grid: Tuple[int, int] | None = None
    # Per state joint: dataset value = robot value * scale + offset (e.g. the robot's
    # driver reports radians, the dataset was recorded in degrees: scale 57.29578).
    robot_to_dataset_scale: List[float] | None = None
    robot_to_dataset_offset: List[float] | None = None


def find_dataset_info(ckpt: Checkpoint, dataset_root: Path | None) -> dict | None:
    """The training dataset's meta/info.json: at `dataset_root`, else where
    train_config.json says the dataset was (its root, or LeRobot's cache for its repo_id)."""
    roots = []
    if dataset_root is not None:
        roots.append(Path(dataset_root))
    else:
        train_config = ckpt.path / "train_config.json"
        if train_config.is_file():
            dataset = json.loads(train_config.read_text()).get("dataset") or {}
            if dataset.get("root"):
                roots.append(Path(dataset["root"]))
            if isinstance(dataset.get("repo_id"), str):
                from lerobot.utils.constants import HF_LEROBOT_HOME

                roots.append(Path(HF_LEROBOT_HOME) / dataset["repo_id"])
    for root in roots:
        info = root / "meta" / "info.json"
        if info.is_file():
            return json.loads(info.read_text())
    if dataset_root is not None:
        raise ExportError(f"{dataset_root} has no meta/info.json")
    return None


def _feature_names(info: dict | None, key: str, length: int) -> List[str] | None:
    """A dataset feature's names: a list (LeRobot >= 2.1) or {"motors": [...]} (2.0)."""
    if info is None:
        return None
    names = (info.get("features", {}).get(key) or {}).get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == length and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _given_names(given: List[str] | None, what: str, length: int) -> List[str] | None:
    if given is not None and len(given) != length:
        raise ExportError(f"{len(given)} {what} names given; the policy's feature has {length}")
    return given


def camera_name(key: str) -> str:
    """`observation.images.top` -> `top`; `observation.image` -> `image`."""
    prefix = "observation.images."
    return key[len(prefix):] if key.startswith(prefix) else key.rsplit(".", 1)[-1]


def _train_config_fps(ckpt: Checkpoint) -> float | None:
    train_config = ckpt.path / "train_config.json"
    if train_config.is_file():
        env = json.loads(train_config.read_text()).get("env") or {}
        if env.get("fps"):
            return float(env["fps"])
    return None


def default_name(ckpt: Checkpoint) -> str:
    """`LeRobot act: act_so101, checkpoint 020000` for
    outputs/train/act_so101/checkpoints/020000/pretrained_model."""
    path = ckpt.path.resolve()
    where = path.name
    if path.name == "pretrained_model" and path.parent.parent.name == "checkpoints":
        where = f"{path.parent.parent.parent.name}, checkpoint {path.parent.name}"
    return f"LeRobot {ckpt.config.type}: {where}"


def build_metadata(ckpt: Checkpoint, opts: Options) -> dict:
    from lerobot.utils.constants import ACTION, OBS_STATE

    cfg = ckpt.config
    flow = cfg.type in FLOW_POLICY_TYPES
    if cfg.robot_state_feature is None:
        raise ExportError("the policy takes no observation.state; the node always gives the joint state")
    if cfg.env_state_feature is not None:
        raise ExportError("the policy takes observation.environment_state, which the node cannot give")
    if not ckpt.image_keys:
        raise ExportError("the policy takes no camera image")
    if opts.resize not in RESIZE_MODES:
        raise ExportError(f"resize must be one of {', '.join(RESIZE_MODES)}, not {opts.resize}")
    state_dim = int(cfg.robot_state_feature.shape[0])
    action_dim = int(cfg.action_feature.shape[0])

    info = find_dataset_info(ckpt, opts.dataset_root)
    state_names = (
        _given_names(opts.state_names, "state", state_dim)
        or _feature_names(info, ckpt.robot_key(OBS_STATE), state_dim)
        or [f"joint_{i}" for i in range(state_dim)]
    )
    action_names = (
        _given_names(opts.action_names, "action", action_dim)
        or _feature_names(info, ACTION, action_dim)
        or (list(state_names) if action_dim == state_dim else [f"joint_{i}" for i in range(action_dim)])
    )
    for what, names in (("state", state_names), ("action", action_names)):
        if len(set(names)) != len(names):
            raise ExportError(f"{what} names repeat: {names}")

    fps = opts.fps or (info or {}).get("fps") or _train_config_fps(ckpt)
    if not fps or float(fps) <= 0:
        raise ExportError(
            "no control rate: give --fps (the dataset's frames per second, the rate the policy was trained to act at)"
        )

    names = opts.camera_names or [camera_name(ckpt.robot_key(k)) for k in ckpt.image_keys]
    if len(names) != len(ckpt.image_keys):
        raise ExportError(f"{len(names)} camera names given; the policy has {len(ckpt.image_keys)} image features")
    if len(set(names)) != len(names):
        raise ExportError(f"camera names repeat: {names}")
    cameras = []
    for name, key in zip(names, ckpt.image_keys):
        h, w = ckpt.image_hw(key)
        cameras.append({
            "name": name,
            "height": h,
            "width": w,
            "resize": opts.resize,
            "expected_width": None if opts.any_camera_size else w,
            "expected_height": None if opts.any_camera_size else h,
        })
    min_h = min(c["height"] for c in cameras)
    min_w = min(c["width"] for c in cameras)
    grid = opts.patch_grid or (min(DEFAULT_PATCH_GRID[0], min_h), min(DEFAULT_PATCH_GRID[1], min_w))
    if grid[0] > min_h or grid[1] > min_w or min(grid) < 1:
        raise ExportError(f"patch grid {list(grid)} does not fit the smallest camera input ({min_h}x{min_w})")

    # A chunk policy unnormalizes its actions itself; a flow policy's chunk is integrated
    # in LeRobot's normalized action space, and the node unnormalizes it.
    action_affine = feature_norm(ckpt.unnormalizer, ACTION, inverse=True).affine() if flow else ([], [])
    normalization = unit_conversion(state_names, action_names, opts, action_affine)
    meta = {
        "contract_version": 2,
        "name": opts.name or default_name(ckpt),
        "kind": "flow" if flow else "chunk",
        "cameras": cameras,
        "state_names": state_names,
        "action_names": action_names,
        "action_mode": "absolute",
        # The whole chunk of predict_action_chunk. n_action_steps is how many of them
        # LeRobot's own loop executes before it infers again: an execution choice that the
        # node's smoothing parameters make, not part of the policy's output.
        "chunk_length": int(cfg.chunk_size),
        "control_rate_hz": float(fps),
        "tokenizer": instruction_tokenizer(ckpt),
        "outputs": [],
        "patch_grid": [int(grid[0]), int(grid[1])],
        "normalization": normalization,
    }
    if flow:
        meta["flow"] = {
            "num_steps": int(cfg.num_steps),
            # sample_actions: x_1 is the noise, t from 1 down by 1 / num_steps.
            "time": "noise_at_one",
            # Gradients reach x_t through velocity (LeRobot's own RTC guidance uses them).
            "guidance": "autograd",
            # x_t (and the noise) is LeRobot's padded action vector, max_action_dim wide;
            # the chunk is its first len(action_names) columns.
            "padded_action_dim": int(cfg.max_action_dim),
        }
    return meta


def instruction_tokenizer(ckpt: Checkpoint) -> dict | None:
    """The metadata's tokenizer: none without a tokenizer step; else LeRobot's tokenizer
    carried in the file (method `tokenizer_json`), cut and padded as its step does."""
    step = ckpt.tokenizer
    if step is None:
        return None
    if step.padding_side != "right" or not step.truncation:
        raise ExportError("the node pads instructions on the right and cuts them at max_length; "
                          f"this tokenizer step pads on the {step.padding_side} (truncation {step.truncation})")
    return {"type": "hf", "method": "tokenizer_json", "max_length": int(step.max_length),
            "pad_id": int(step.input_tokenizer.pad_token_id)}


def tokenizer_json(ckpt: Checkpoint) -> str:
    """LeRobot's tokenizer as one `tokenizers` JSON: the instruction steps of the
    preprocessor become its normalizer (SmolVLA's newline at the end, appended before
    the tokenizer's own normalizer, as the steps run), its padding and truncation are
    left to the node (max_length, pad_id in the metadata)."""
    from tokenizers import Regex, Tokenizer, normalizers

    tok = Tokenizer.from_str(ckpt.tokenizer.input_tokenizer.backend_tokenizer.to_str())
    tok.no_padding()
    tok.no_truncation()
    if ckpt.newline:
        # \z: the very end of the text (`$` would also match before a final newline).
        newline = normalizers.Replace(Regex(r"\z"), "\n")
        tok.normalizer = newline if tok.normalizer is None else normalizers.Sequence([newline, tok.normalizer])
    return tok.to_str()


def tokenize(tokenizer: str, texts: List[str], max_length: int, pad_id: int) -> Tuple[Tensor, Tensor]:
    """token_ids and token_mask as the contract defines them for an `hf` tokenizer:
    `Tokenizer.encode(text).ids`, cut at max_length, padded with pad_id."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer)
    ids = torch.full((len(texts), max_length), pad_id, dtype=torch.int64)
    mask = torch.zeros(len(texts), max_length, dtype=torch.bool)
    for i, text in enumerate(texts):
        row = tok.encode(text).ids[:max_length]
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[i, :len(row)] = True
    return ids, mask


def unit_conversion(state_names: List[str], action_names: List[str], opts: Options,
                    action_affine: Tuple[List[float], List[float]] = ([], [])) -> dict:
    """The metadata's normalization. LeRobot's state normalization is inside the module,
    so the state's is the identity, unless the robot's units differ from the dataset's:
    then it is that linear conversion, which the node applies to the state before the
    module ((q - mean) / std = q * scale + offset) and undoes on the actions
    (a * std + mean), joint by joint, by name. `action_affine` (std, mean per action;
    empty: identity) is an unnormalization the node applies first (flow policies)."""
    n = len(state_names)
    scale = opts.robot_to_dataset_scale or [1.0] * n
    offset = opts.robot_to_dataset_offset or [0.0] * n
    if len(scale) != n or len(offset) != n:
        raise ExportError(f"unit scale and offset need one value per state joint ({n}: {', '.join(state_names)})")
    if any(v == 0 for v in scale):
        raise ExportError("a unit scale of 0 would lose the joint")
    state_std = [1.0 / v for v in scale]
    state_mean = [-o / v + 0.0 for o, v in zip(offset, scale)]  # + 0.0: no -0.0 in the metadata
    converted = opts.robot_to_dataset_scale is not None or opts.robot_to_dataset_offset is not None
    missing = [a for a in action_names if a not in state_names]
    if converted and missing:
        raise ExportError(f"units are given per state joint; the actions {missing} are not state joints")
    index = {name: i for i, name in enumerate(state_names)}
    unit_std = [state_std[index[a]] if converted else 1.0 for a in action_names]
    unit_mean = [state_mean[index[a]] if converted else 0.0 for a in action_names]
    norm_std, norm_mean = action_affine if action_affine[0] else ([1.0] * len(action_names), [0.0] * len(action_names))
    # a_robot = (x * norm_std + norm_mean) * unit_std + unit_mean
    return {
        "state_mean": state_mean,
        "state_std": state_std,
        "action_mean": [m * u + um for m, u, um in zip(norm_mean, unit_std, unit_mean)] if converted else list(norm_mean),
        "action_std": [s * u for s, u in zip(norm_std, unit_std)] if converted else list(norm_std),
    }


# --------------------------------------------------------------------------------------
# Export and check.


@dataclass
class Exported:
    metadata: dict
    # With the check: observations, max_abs_diff (one at a time), max_abs_diff_batched, tolerance.
    check: dict | None
    # The node's smoothing parameters closest to how LeRobot executed the chunks.
    smoothing: str


def export(policy_dir: Path, opts: Options, check: bool = True, tolerance: float = 1e-4,
           inspect_case: Path | None = None) -> Exported:
    """Writes the policy file (and, with `inspect_case`, a case for the node's `inspect`
    command there, see write_inspect_case); with `check`, holds it to LeRobot."""
    config_file = Path(policy_dir) / "config.json"
    kind = json.loads(config_file.read_text()).get("type") if config_file.is_file() else None
    # Before loading: LeRobot cannot even build some of these here.
    if kind in UNSUPPORTED_POLICY_TYPES:
        raise ExportError(f"policy type '{kind}' cannot be exported: {UNSUPPORTED_POLICY_TYPES[kind]}")
    if kind is not None and kind not in CHUNK_POLICY_TYPES + FLOW_POLICY_TYPES:
        raise ExportError(f"policy type '{kind}' is not supported; this export handles "
                          f"{', '.join(CHUNK_POLICY_TYPES + FLOW_POLICY_TYPES)}")
    ckpt = load_checkpoint(Path(policy_dir))
    meta = build_metadata(ckpt, opts)
    heights = [c["height"] for c in meta["cameras"]]
    widths = [c["width"] for c in meta["cameras"]]
    state_dim = len(meta["state_names"])
    if meta["kind"] == "chunk":
        traced = trace_core(LeRobotChunk(ckpt).eval(), heights, widths, state_dim)
        make_device_agnostic(traced)
        module = torch.jit.script(ContractChunkPolicy(traced, json.dumps(meta), heights, widths, state_dim))
    else:
        module = flow_module(ckpt, meta, heights, widths, state_dim)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(module, str(opts.output))
    if inspect_case is not None:
        write_inspect_case(ckpt, meta, inspect_case, opts.output)
    figures = None
    if check:
        figures = (check_against_lerobot if meta["kind"] == "chunk" else check_flow_against_lerobot)(
            ckpt, opts.output, meta, tolerance)
    return Exported(meta, figures, smoothing_advice(ckpt.config))


def flow_module(ckpt: Checkpoint, meta: dict, heights: List[int], widths: List[int], state_dim: int):
    """SmolVLA's encode (traced for one observation) and velocity (traced at batch 2,
    checked at 1 and 3), under a scripted top level."""
    cfg = ckpt.config
    if cfg.adapt_to_pi_aloha:
        raise ExportError("adapt_to_pi_aloha changes state and actions outside the model; the export does not carry it")
    if not cfg.use_cache:
        raise ExportError("use_cache is off: the denoising steps would not read a key/value cache to export")
    tok = meta["tokenizer"]
    if tok is None:
        raise ExportError("a SmolVLA checkpoint without a tokenizer step in its preprocessor")
    text = tokenizer_json(ckpt)
    length, dim, chunk = tok["max_length"], meta["flow"]["padded_action_dim"], meta["chunk_length"]
    encode, velocity = SmolVLAEncode(ckpt).eval(), SmolVLAVelocity(ckpt).eval()

    def example(batch: int, seed: int):
        images, state = _example_inputs(heights, widths, state_dim, batch, seed)
        tasks = [CHECK_TASKS[i % len(CHECK_TASKS)] for i in range(batch)]
        return (images, state, *tokenize(text, tasks, length, tok["pad_id"]))

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        encode_traced = torch.jit.trace(encode, example(1, seed=1), check_trace=False, strict=False)
        context = encode(*example(2, seed=2))
        g = torch.Generator().manual_seed(3)
        x_t, t = torch.randn(2, chunk, dim, generator=g), torch.rand(2, generator=g)
        velocity_traced = torch.jit.trace(velocity, (x_t, t, context), check_trace=False)
        for b in (1, 3):
            context = encode(*example(b, seed=10 + b))
            x_t, t = torch.randn(b, chunk, dim, generator=g), torch.rand(b, generator=g)
            want, got = velocity(x_t, t, context), velocity_traced(x_t, t, context)
            if want.shape != got.shape or not torch.allclose(want, got, rtol=0, atol=1e-5):
                raise ExportError(f"the traced velocity does not reproduce batch size {b}")
    for traced in (encode_traced, velocity_traced):
        make_device_agnostic(traced)
    return torch.jit.script(ContractFlowPolicy(encode_traced, velocity_traced, json.dumps(meta), text, heights, widths,
                                               state_dim, length, chunk, dim))


def smoothing_advice(cfg) -> str:
    coeff = getattr(cfg, "temporal_ensemble_coeff", None)
    if coeff is not None:
        return (f"LeRobot ran this policy with temporal ensembling (coefficient {coeff}, a new chunk every step): "
                f"on the node, smoothing: temporal_ensemble, ensemble_m: {coeff}")
    return (f"LeRobot ran {cfg.n_action_steps} of each chunk's {cfg.chunk_size} actions open-loop before inferring "
            "again; the node infers on every camera set and blends the chunks: smoothing: temporal_ensemble "
            "(ensemble_m 0.01, as in the ACT paper) or none (the newest chunk)")


def lerobot_batch(ckpt: Checkpoint, images: Dict[str, np.ndarray], state: np.ndarray,
                  task: str | None = None) -> Dict[str, Tensor]:
    """One observation through LeRobot's inference preparation and preprocessor, as its
    record loop runs them: images uint8 HWC by policy feature key, state float32 [S], the
    task for a policy that reads one."""
    from lerobot.policies.utils import prepare_observation_for_inference
    from lerobot.utils.constants import OBS_STATE

    obs = {key: image.copy() for key, image in images.items()}
    obs[OBS_STATE] = state.astype(np.float32)
    return ckpt.preprocessor(prepare_observation_for_inference(obs, torch.device("cpu"), task=task))


def lerobot_chunk(ckpt: Checkpoint, batch: Dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
    """LeRobot's chunk [1, T, A] in action units for a preprocessed batch (with the given
    noise for a flow policy)."""
    kwargs = {} if noise is None else {"noise": noise.clone()}
    with torch.no_grad():
        return ckpt.postprocessor(ckpt.policy.predict_action_chunk(batch, **kwargs))


_FRESH_PROCESS = """
import json, sys, torch
if int(sys.argv[4]) > 0:
    torch.set_num_threads(int(sys.argv[4]))
m = torch.jit.load(sys.argv[1])
meta = json.loads(m.metadata())
cases = torch.load(sys.argv[2])
out = []
with torch.no_grad():
    for case in cases:
        if meta["kind"] == "chunk":
            images, state = case
            empty = torch.zeros(state.shape[0], 0, dtype=torch.int64)
            out.append(m(images, state, empty, empty.bool())[0])
            continue
        # kind flow, time noise_at_one: Euler from x_1 = noise, as docs/POLICY_CONTRACT.md says.
        images, state, token_ids, token_mask, noise = case
        context, _ = m.encode(images, state, token_ids, token_mask)
        n = meta["flow"]["num_steps"]
        dt = -1.0 / n
        x = noise
        for k in range(n):
            t = torch.full((x.shape[0],), 1.0 + k * dt, dtype=torch.float32)
            x = x + dt * m.velocity(x, t, context)
        out.append(x)
torch.save(out, sys.argv[3])
"""


def run_in_fresh_process(policy_file: Path, cases: list, python: str = sys.executable, threads: int = 0) -> List[Tensor]:
    """The file loaded by torch.jit.load in a new interpreter (`python`; `threads` > 0
    sets torch's intra-op threads, as the node's torch_threads does), run on each case:
    (images, state) for a chunk policy, its chunk back; (images, state, token_ids,
    token_mask, noise) for a flow policy, the integrated x_0 back (all padded_action_dim
    columns, normalized)."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "cases.pt", Path(tmp) / "chunks.pt"
        torch.save(cases, inp)
        subprocess.run([python, "-c", _FRESH_PROCESS, str(policy_file), str(inp), str(out), str(threads)], check=True)
        return torch.load(out)


def flow_chunk(meta: dict, x0: Tensor) -> Tensor:
    """A flow policy's integrated x_0 as the node turns it into joint targets: the first
    len(action_names) columns, times action_std plus action_mean."""
    norm = meta["normalization"]
    a = len(meta["action_names"])
    return x0[..., :a] * torch.tensor(norm["action_std"]) + torch.tensor(norm["action_mean"])


def random_observations(ckpt: Checkpoint, meta: dict, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [({key: rng.integers(0, 256, (cam["height"], cam["width"], 3), dtype=np.uint8)
              for key, cam in zip(ckpt.image_keys, meta["cameras"])},
             rng.normal(size=len(meta["state_names"])).astype(np.float32)) for _ in range(n)]


def as_batch(ckpt: Checkpoint, observations) -> Tuple[List[Tensor], Tensor]:
    """Contract inputs for observations (images by feature key, state): images in camera
    order [B, H, W, 3], state [B, S]."""
    images = [torch.stack([torch.from_numpy(np.ascontiguousarray(o[0][k])) for o in observations])
              for k in ckpt.image_keys]
    return images, torch.stack([torch.from_numpy(o[1]) for o in observations])


def _compare(single: float, batched: float, tolerance: float, n: int) -> dict:
    if not (single <= tolerance and batched <= tolerance):
        raise ExportError(
            f"the exported file differs from LeRobot by {max(single, batched):.3g} (tolerance {tolerance}): "
            f"{single:.3g} one observation at a time, {batched:.3g} as a batch"
        )
    return {"observations": n, "max_abs_diff": single, "max_abs_diff_batched": batched, "tolerance": tolerance}


def check_against_lerobot(ckpt: Checkpoint, policy_file: Path, meta: dict, tolerance: float, n: int = 3) -> dict:
    """Compares the file's chunks with LeRobot's on `n` random observations, one at a
    time and all in one batch. Raises ExportError past `tolerance`."""
    observations = random_observations(ckpt, meta, n, seed=0)
    want = [lerobot_chunk(ckpt, lerobot_batch(ckpt, images, state))[0] for images, state in observations]
    cases = [as_batch(ckpt, [o]) for o in observations] + [as_batch(ckpt, observations)]
    got = run_in_fresh_process(policy_file, cases)
    single = max(float((g[0] - w).abs().max()) for g, w in zip(got[:n], want))
    batched = float((got[n] - torch.stack(want)).abs().max())
    return _compare(single, batched, tolerance, n)


CHECK_TASKS = ["pick up the red cube and put it in the box", "把蓝色圆柱体放到托盘右侧", "open the drawer"]


def check_flow_against_lerobot(ckpt: Checkpoint, policy_file: Path, meta: dict, tolerance: float) -> dict:
    """LeRobot's sampling (predict_action_chunk with a given noise) against the file's
    encode and velocity integrated as the contract says, with the same noise, on random
    observations with instructions tokenized by the file's own tokenizer. Also holds
    those token ids to LeRobot's tokenizer step."""
    from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

    tok, flow = meta["tokenizer"], meta["flow"]
    text = torch.jit.load(str(policy_file)).tokenizer_json()
    observations = random_observations(ckpt, meta, len(CHECK_TASKS), seed=0)
    g = torch.Generator().manual_seed(0)
    noise = [torch.randn(1, meta["chunk_length"], flow["padded_action_dim"], generator=g) for _ in observations]
    ids, mask = tokenize(text, CHECK_TASKS, tok["max_length"], tok["pad_id"])
    want = []
    for (images, state), task, eps, row, row_mask in zip(observations, CHECK_TASKS, noise, ids, mask):
        batch = lerobot_batch(ckpt, images, state, task=task)
        lerobot_ids = batch[OBS_LANGUAGE_TOKENS][0][batch[OBS_LANGUAGE_ATTENTION_MASK][0]]
        if not torch.equal(lerobot_ids, row[row_mask]):
            raise ExportError(f"the exported tokenizer reads {task!r} as {row[row_mask].tolist()}, "
                              f"LeRobot as {lerobot_ids.tolist()}")
        want.append(lerobot_chunk(ckpt, batch, noise=eps)[0])
    cases = [(*as_batch(ckpt, [o]), ids[i:i + 1], mask[i:i + 1], noise[i]) for i, o in enumerate(observations)]
    cases.append((*as_batch(ckpt, observations), ids, mask, torch.cat(noise)))
    got = [flow_chunk(meta, x) for x in run_in_fresh_process(policy_file, cases)]
    n = len(observations)
    single = max(float((g_[0] - w).abs().max()) for g_, w in zip(got[:n], want))
    batched = float((got[n] - torch.stack(want)).abs().max())
    return _compare(single, batched, tolerance, n)


def write_inspect_case(ckpt: Checkpoint, meta: dict, out_dir: Path, policy_file: Path, seed: int = 0) -> dict:
    """One observation for `vla_controller inspect`, with LeRobot's chunk for it, so that
    the node's own libtorch path can be held to LeRobot on the robot's computer.

    Writes, in `out_dir`: one PNG per camera at the policy's input size (so that the node
    resizes nothing), `case.json` (the policy file, images, joints in `state_names`
    order, the instruction, LeRobot's chunk in action units, the tolerance; for a flow
    policy also the noise, [chunk_length][padded_action_dim], that LeRobot's sampling
    started from: the node must integrate from the same noise to reproduce the chunk)
    and `inspect.jsonl` (the same case for `vla_controller inspect --batch`). The images
    are uniform noise: any pixel the node moved, dropped or swapped changes the chunk.
    Returns case.json's content."""
    from vla_demo.png import write_png

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, files = {}, []
    for key, cam in zip(ckpt.image_keys, meta["cameras"]):
        images[key] = rng.integers(0, 256, (cam["height"], cam["width"], 3), dtype=np.uint8)
        files.append(f"{cam['name']}.png")
        write_png(out_dir / files[-1], images[key])
    # float32 values written as the exact decimal of the float32, so that the node's
    # f64 -> f32 conversion gives the very state LeRobot saw.
    state = rng.normal(size=len(meta["state_names"])).astype(np.float32)
    flow = meta["kind"] == "flow"
    instruction = CHECK_TASKS[0] if meta["tokenizer"] is not None else ""
    noise = None
    if flow:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(1, meta["chunk_length"], meta["flow"]["padded_action_dim"], generator=g)
    batch = lerobot_batch(ckpt, images, state, task=instruction if meta["tokenizer"] is not None else None)
    chunk = lerobot_chunk(ckpt, batch, noise=noise)[0]
    case = {
        "policy": os.path.relpath(Path(policy_file).resolve(), out_dir.resolve()),
        "images": files,
        "joints": [float(v) for v in state],
        "state_names": meta["state_names"],
        "action_names": meta["action_names"],
        "instruction": instruction,
        "expected_actions": chunk.tolist(),
        "tolerance": 1e-4,
    }
    if flow:
        case["noise"] = noise[0].tolist()
    (out_dir / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    line = {"images": files, "joints": case["joints"], "instruction": instruction, "out": "out"}
    (out_dir / "inspect.jsonl").write_text(json.dumps(line) + "\n")
    return case


def _names(text: str) -> List[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _floats(text: str) -> List[float]:
    return [float(v) for v in _names(text)]


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy_dir", type=Path, help="a LeRobot pretrained_model folder (config.json, model.safetensors, ...)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the policy file to write (.pt)")
    p.add_argument("--name", help="the policy's name in its metadata")
    p.add_argument("--dataset-root", type=Path, help="the training dataset's folder (with meta/info.json)")
    p.add_argument("--state-names", type=_names, help="comma-separated, in observation.state order")
    p.add_argument("--action-names", type=_names, help="comma-separated, in action order")
    p.add_argument("--camera-names", type=_names, help="comma-separated, in the policy's image feature order")
    p.add_argument("--fps", type=float, help="control rate in Hz (default: the dataset's fps)")
    p.add_argument("--resize", default="area", choices=RESIZE_MODES,
                   help="how the node brings a camera image of another size to the policy's (default area)")
    p.add_argument("--any-camera-size", action="store_true",
                   help="accept any camera size, resized on arrival (default: only the trained size)")
    p.add_argument("--patch-grid", type=lambda s: tuple(int(v) for v in s.split(",")),
                   help="rows,cols of occlusion explanations (default 12,16)")
    p.add_argument("--robot-to-dataset-scale", type=_floats, metavar="S1,S2,...",
                   help="per state joint: dataset value = robot value * scale + offset (default 1)")
    p.add_argument("--robot-to-dataset-offset", type=_floats, metavar="O1,O2,...",
                   help="per state joint, with the scale above (default 0)")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with LeRobot after writing")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference from LeRobot's chunk")
    p.add_argument("--inspect-case", type=Path, metavar="DIR",
                   help="also write one observation and LeRobot's chunk for it, for `vla_controller inspect`")
    a = p.parse_args(argv)
    opts = Options(output=a.output, name=a.name, dataset_root=a.dataset_root, state_names=a.state_names,
                   action_names=a.action_names, camera_names=a.camera_names, fps=a.fps, resize=a.resize,
                   any_camera_size=a.any_camera_size, patch_grid=a.patch_grid,
                   robot_to_dataset_scale=a.robot_to_dataset_scale, robot_to_dataset_offset=a.robot_to_dataset_offset)
    try:
        result = export(a.policy_dir, opts, check=not a.no_check, tolerance=a.tolerance,
                        inspect_case=a.inspect_case)
    except ExportError as e:
        print(f"export_lerobot: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.output}")
    print(json.dumps(result.metadata, indent=2))
    if a.inspect_case:
        print(f"wrote an inspect case in {a.inspect_case} (case.json, inspect.jsonl, one PNG per camera)")
    if result.check:
        c = result.check
        print(f"checked against LeRobot on {c['observations']} random observations: "
              f"max |diff| {c['max_abs_diff']:.3g} one at a time, {c['max_abs_diff_batched']:.3g} batched")
    print(result.smoothing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
