#!/usr/bin/env python3
"""LeRobot ACT policies as a LeRobot user has them after training, made here with
LeRobot's own code (random init: no hub, no pretrained backbone), and their exports.

A "training run" is what `lerobot-record` and `lerobot-train` leave behind:
`dataset/meta/info.json` (features with joint names, fps) and
`train/checkpoints/last/pretrained_model/` (config.json, model.safetensors,
policy_preprocessor*.json/.safetensors with the normalization statistics,
policy_postprocessor*, train_config.json pointing at the dataset).

As a program it writes the policies the node's own tests use (run it in .venv-lerobot):

    .venv-lerobot/bin/python tests/lerobot/fixtures.py out/lerobot

    out/lerobot/act_top.pt            one camera "top", 96x128, any camera size (area),
                                      SO-101 joint names, 30 Hz: the live one-camera test
    out/lerobot/act_top_case/         PNG, joints and LeRobot's chunk for `inspect`
    out/lerobot/act_two.pt            cameras "top" and "wrist", 48x64 each, MIN_MAX
                                      state and action normalization, strict sizes
    out/lerobot/act_two_case/
    out/lerobot/smolvla.pt            kind flow: cameras "top" 48x64 and "wrist" 40x40,
                                      tokenizer inside, 10 steps, x_t 10x32
    out/lerobot/smolvla_case/         with the instruction and the noise LeRobot used
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

from vla_export import lerobot as export_lerobot  # noqa: E402

# The node's own environment: torch 2.11 without LeRobot.
NODE_PYTHON = str(ROOT / ".venv" / "bin" / "python")
# The parity the exported files are held to (absolute, in action units).
TOLERANCE = 1e-4

# The joint names LeRobot's SO-100/SO-101 follower records (`<motor>.pos`).
SO101_JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos",
                "gripper.pos"]
# The simulated arm's joints (python/vla_demo, config/controller.yaml) and where the demo
# arm rests; a policy trained on an SO-101 runs on it through the node's joint_name_map.
SIM_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch", "wrist_roll", "gripper"]
SIM_NAME_MAP = dict(zip(SIM_JOINTS, SO101_JOINTS))
SIM_REST = [0.0, 1.2, -1.8, -0.9, 0.0, 0.04]


@dataclass
class ActRun:
    """What to make: cameras as name -> (height, width), in feature order."""

    cameras: dict
    joint_names: list = field(default_factory=lambda: list(SO101_JOINTS))
    fps: int = 30
    chunk_size: int = 20
    n_action_steps: int = 20
    seed: int = 0
    # Per FeatureType (STATE, ACTION), as ACTConfig.normalization_mapping; VISUAL stays
    # MEAN_STD with ImageNet statistics, as lerobot-train sets them (use_imagenet_stats).
    state_action_norm: str = "MEAN_STD"
    # Action statistics (mean, std); None: random, seeded.
    action_stats: tuple | None = None


@dataclass
class TrainedRun:
    root: Path
    dataset: Path
    checkpoint: Path
    run: ActRun


def record_dataset(root: Path, repo_id: str, joint_names: list, cameras: dict, fps: int):
    """A dataset's metadata as lerobot-record writes it for a robot with these joints and
    cameras, and the policy features lerobot-train (make_policy) derives from it:
    returns (dataset metadata, input features, output features)."""
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.datasets.utils import combine_feature_dicts, dataset_to_policy_features, hw_to_dataset_features

    hw_obs = {name: float for name in joint_names}
    hw_obs.update({cam: (h, w, 3) for cam, (h, w) in cameras.items()})
    features = combine_feature_dicts(
        hw_to_dataset_features(hw_obs, "observation"),
        hw_to_dataset_features({name: float for name in joint_names}, "action"),
    )
    meta = LeRobotDatasetMetadata.create(repo_id=repo_id, fps=fps, features=features, robot_type="so101_follower",
                                         root=Path(root) / "dataset")
    policy_features = dataset_to_policy_features(meta.features)
    output_features = {k: f for k, f in policy_features.items() if f.type is FeatureType.ACTION}
    input_features = {k: f for k, f in policy_features.items() if k not in output_features}
    return meta, input_features, output_features


def save_training_run(root: Path, meta, policy, preprocessor, postprocessor, run) -> TrainedRun:
    """The checkpoint as lerobot-train's save_checkpoint writes it."""
    from lerobot.configs.default import DatasetConfig
    from lerobot.configs.train import TrainPipelineConfig

    checkpoint = Path(root) / "train" / "checkpoints" / "last" / "pretrained_model"
    policy.save_pretrained(checkpoint)
    TrainPipelineConfig(dataset=DatasetConfig(repo_id=meta.repo_id, root=str(meta.root)), policy=policy.config) \
        .save_pretrained(checkpoint)
    preprocessor.save_pretrained(checkpoint)
    postprocessor.save_pretrained(checkpoint)
    return TrainedRun(Path(root), meta.root, checkpoint, run)


def make_act_run(root: Path, run: ActRun) -> TrainedRun:
    """Writes a LeRobot dataset's metadata and an ACT checkpoint trained on it (random
    weights), the way LeRobot itself writes them."""
    from lerobot.configs.types import NormalizationMode
    from lerobot.datasets.factory import IMAGENET_STATS
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.act.processor_act import make_act_pre_post_processors

    meta, input_features, output_features = record_dataset(root, "local/act_fixture", run.joint_names, run.cameras,
                                                           run.fps)
    mode = NormalizationMode(run.state_action_norm)
    torch.manual_seed(run.seed)
    config = ACTConfig(
        input_features=input_features, output_features=output_features, device="cpu",
        chunk_size=run.chunk_size, n_action_steps=run.n_action_steps,
        normalization_mapping={"VISUAL": NormalizationMode.MEAN_STD, "STATE": mode, "ACTION": mode},
        # Small enough for tests in seconds; ResNet18 is ACT's smallest backbone.
        pretrained_backbone_weights=None, dim_model=32, n_heads=2, dim_feedforward=64,
        n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=8,
    )
    policy = ACTPolicy(config)

    # Dataset statistics (compute_stats' keys and shapes), images with ImageNet's.
    rng = np.random.default_rng(run.seed)
    n = len(run.joint_names)

    def vector_stats(mean, std):
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        return {"mean": mean, "std": std, "min": mean - 2.5 * std, "max": mean + 2.5 * std}

    stats = {
        "observation.state": vector_stats(rng.uniform(-30, 30, n), rng.uniform(5, 20, n)),
        "action": vector_stats(*(run.action_stats or (rng.uniform(-30, 30, n), rng.uniform(5, 20, n)))),
    }
    for cam in run.cameras:
        stats[f"observation.images.{cam}"] = {k: np.array(v, np.float32) for k, v in IMAGENET_STATS.items()}
    preprocessor, postprocessor = make_act_pre_post_processors(config, dataset_stats=stats)
    return save_training_run(root, meta, policy, preprocessor, postprocessor, run)


def make_tiny_smolvlm(out: Path) -> Path:
    """A SmolVLM small enough for tests, written where a hub model would be cached:
    config.json (a 1-layer SigLIP-style vision tower on 32x32 images, 8x8 patches, and a
    2-layer Llama text model), and a processor with a byte-level BPE tokenizer trained
    here on robot instructions, with SmolVLM's special tokens. No weights: SmolVLA
    builds the VLM from the config (load_vlm_weights false) and takes all weights from
    its own checkpoint."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    out = Path(out)
    specials = {"pad": "<|endoftext|>", "bos": "<|im_start|>", "end_of_utterance_token": "<end_of_utterance>",
                "fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                "global_image_token": "<global-img>"}
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    instructions = [f"{verb} the {colour} {thing}\n" for verb in ("pick up", "move", "push", "stack", "open")
                    for colour in ("red", "green", "blue", "yellow") for thing in ("cube", "cylinder", "drawer")]
    tok.train_from_iterator(instructions, trainers.BpeTrainer(
        vocab_size=320, special_tokens=list(specials.values()), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    extra = {k: v for k, v in specials.items() if k.endswith("_token")}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=specials["pad"], bos_token=specials["bos"],
                                   eos_token=specials["end_of_utterance_token"], extra_special_tokens=extra)
    SmolVLMProcessor(image_processor=SmolVLMImageProcessor(size={"longest_edge": 32},
                                                           max_image_size={"longest_edge": 32}),
                     tokenizer=fast, video_processor=SmolVLMVideoProcessor(), image_seq_len=4).save_pretrained(out)
    SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=len(fast),
                         max_position_embeddings=256, pad_token_id=fast.pad_token_id),
        scale_factor=2, image_token_id=fast.convert_tokens_to_ids("<image>"), pad_token_id=fast.pad_token_id,
    ).save_pretrained(out)
    return out


@dataclass
class SmolVLARun:
    cameras: dict = field(default_factory=lambda: {"top": (48, 64), "wrist": (40, 40)})
    joint_names: list = field(default_factory=lambda: list(SO101_JOINTS))
    fps: int = 30
    chunk_size: int = 10
    seed: int = 0
    # LeRobot's default pads each batch to its longest instruction; "max_length" pads
    # to tokenizer_max_length, as the node does.
    pad_language_to: str = "longest"


def make_smolvla_run(root: Path, run: SmolVLARun) -> TrainedRun:
    """A SmolVLA training run (random weights) on a tiny SmolVLM made here, saved as
    LeRobot saves one; the dataset's metadata beside it."""
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    vlm = make_tiny_smolvlm(Path(root) / "smolvlm")
    meta, input_features, output_features = record_dataset(root, "local/smolvla_fixture", run.joint_names,
                                                           run.cameras, run.fps)
    torch.manual_seed(run.seed)
    config = SmolVLAConfig(
        input_features=input_features, output_features=output_features, device="cpu",
        vlm_model_name=str(vlm), load_vlm_weights=False, num_vlm_layers=2, chunk_size=run.chunk_size,
        n_action_steps=run.chunk_size, resize_imgs_with_padding=(32, 32), tokenizer_max_length=16,
        pad_language_to=run.pad_language_to,
    )
    policy = SmolVLAPolicy(config)
    rng = np.random.default_rng(run.seed)
    n = len(run.joint_names)
    stats = {key: {"mean": rng.uniform(-30, 30, n).astype(np.float32), "std": rng.uniform(5, 20, n).astype(np.float32)}
             for key in ("observation.state", "action")}
    preprocessor, postprocessor = make_smolvla_pre_post_processors(config, dataset_stats=stats)
    return save_training_run(root, meta, policy, preprocessor, postprocessor, run)


# The policies the node's tests run.
LIVE_TOP = ActRun(cameras={"top": (96, 128)}, action_stats=(SIM_REST, [0.05, 0.05, 0.05, 0.05, 0.05, 0.005]))
# How LIVE_TOP is exported for the live test (any camera size, resized by area); the
# node-parity test exports it the same way, so the file proven is the file that drives.
LIVE_TOP_EXPORT = {"resize": "area", "any_camera_size": True}
TWO_CAMERAS = ActRun(cameras={"top": (48, 64), "wrist": (48, 64)}, state_action_norm="MIN_MAX", seed=1)


def make_node_fixtures(out: Path) -> dict:
    """The exported policies and inspect cases listed in this module's docstring."""
    out = Path(out)
    made = {}
    for name, run, any_size in (("act_top", LIVE_TOP, True), ("act_two", TWO_CAMERAS, False),
                                ("smolvla", SmolVLARun(), False)):
        shutil.rmtree(out / f"{name}_run", ignore_errors=True)
        make = make_smolvla_run if isinstance(run, SmolVLARun) else make_act_run
        trained = make(out / f"{name}_run", run)
        opts = export_lerobot.Options(output=out / f"{name}.pt", resize="area", any_camera_size=any_size)
        made[name] = export_lerobot.export(trained.checkpoint, opts, inspect_case=out / f"{name}_case").metadata
    return made


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    for name, meta in make_node_fixtures(Path(sys.argv[1])).items():
        print(name, json.dumps(meta))
