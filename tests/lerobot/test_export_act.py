"""vla_export.lerobot (python -m vla_export.lerobot) on LeRobot's own ACTPolicy: the exported file, loaded with
torch.jit.load in a process that has no LeRobot, gives the chunk of LeRobot's own
pipeline (preprocessor, predict_action_chunk, postprocessor) within 1e-4, for one and
for two cameras and for the live test's policy (LIVE_TOP, exported as test_act_live.py
exports it), in Python and through the node's `inspect`; its metadata is what the node
needs; what it cannot export it refuses with a message. Runs in .venv-lerobot (scripts/setup.sh)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

try:
    import lerobot  # noqa: F401
except ImportError as e:  # a clear word instead of a skip: these tests must run
    raise ImportError("tests/lerobot need LeRobot: run them with .venv-lerobot/bin/python (scripts/setup.sh)") from e

from vla_export import lerobot as ex  # noqa: E402
from fixtures import (LIVE_TOP, LIVE_TOP_EXPORT, NODE_PYTHON, SO101_JOINTS, TOLERANCE, TWO_CAMERAS,  # noqa: E402
                      ActRun, make_act_run)

BIN = ROOT / "target" / "release" / "vla_controller"

ONE_CAMERA = ActRun(cameras={"top": (48, 64)})


# name -> (run, export options): LIVE_TOP is the policy test_act_live.py drives the arm
# with, exported the same way (any camera size, area), so that the file proven here
# within 1e-4 of LeRobot is that file.
RUNS = {"one_camera": (ONE_CAMERA, {}), "two_cameras": (TWO_CAMERAS, {}), "live_top": (LIVE_TOP, LIVE_TOP_EXPORT)}


@pytest.fixture(scope="module", params=list(RUNS))
def exported(request, tmp_path_factory):
    run, options = RUNS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    trained = make_act_run(root, run)
    result = ex.export(trained.checkpoint, ex.Options(output=root / "policy.pt", **options))
    return trained, root / "policy.pt", result


def label(trained) -> str:
    """The configuration's name (the fixture's folder) and its cameras, for the figures printed."""
    cams = ", ".join(f"{cam} {w}x{h}" for cam, (h, w) in trained.run.cameras.items())
    return f"{trained.root.name.rstrip('0123456789')} ({cams})"


def action_scale(run: ActRun) -> float:
    """The largest action standard deviation of the run's statistics, at most 1: LIVE_TOP's
    actions vary by 0.05 around the rest pose, not by tens of units."""
    return min(1.0, float(np.max(run.action_stats[1]))) if run.action_stats else 1.0


def lerobot_reference(checkpoint: Path):
    """LeRobot's inference as lerobot-record runs it, loaded from the checkpoint folder."""
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.utils import prepare_observation_for_inference

    policy = ACTPolicy.from_pretrained(checkpoint)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(checkpoint))

    def chunk(images: dict, state: np.ndarray) -> torch.Tensor:
        obs = {f"observation.images.{cam}": img.copy() for cam, img in images.items()}
        obs["observation.state"] = state.copy()
        with torch.no_grad():
            return post(policy.predict_action_chunk(pre(prepare_observation_for_inference(obs, torch.device("cpu")))))[0]

    return chunk


def observations(run: ActRun, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [({cam: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for cam, (h, w) in run.cameras.items()},
             rng.normal(0, 20, len(run.joint_names)).astype(np.float32)) for _ in range(n)]


def as_inputs(run: ActRun, obs):
    """Contract inputs (images in camera order, [B, H, W, 3]; state [B, S]) of a batch."""
    images = [torch.stack([torch.from_numpy(o[0][cam]) for o in obs]) for cam in run.cameras]
    return images, torch.stack([torch.from_numpy(o[1]) for o in obs])


def test_exported_chunk_matches_lerobot(exported):
    trained, policy_file, result = exported
    run = trained.run
    reference = lerobot_reference(trained.checkpoint)
    obs = observations(run, 4, seed=7)
    want = torch.stack([reference(images, state) for images, state in obs])
    assert want.shape == (4, run.chunk_size, len(run.joint_names))

    # One observation at a time and all four as one batch, one libtorch thread as the
    # node runs it, in the node's environment (torch 2.11, no LeRobot).
    cases = [as_inputs(run, [o]) for o in obs] + [as_inputs(run, obs)]
    got = ex.run_in_fresh_process(policy_file, cases, python=NODE_PYTHON, threads=1)
    single = max(float((g[0] - w).abs().max()) for g, w in zip(got[:4], want))
    batched = float((got[4] - want).abs().max())
    print(f"\n{label(trained)}: max |exported - LeRobot| {single:.3g} one at a time, "
          f"{batched:.3g} batched; export's own check {result.check}")
    assert single <= TOLERANCE and batched <= TOLERANCE

    # The agreement means something: the chunk moves with the state and with every
    # camera, by far more than the tolerance (in proportion to the actions' spread).
    scale = action_scale(run)
    assert float((want[0] - want[1]).abs().max()) > 1e3 * TOLERANCE * scale
    images, state = obs[0]
    for cam in run.cameras:
        changed = dict(images)
        changed[cam] = np.ascontiguousarray(images[cam][::-1])
        assert float((reference(changed, state) - want[0]).abs().max()) > 1e2 * TOLERANCE * scale, cam
    assert result.check["max_abs_diff"] <= TOLERANCE and result.check["max_abs_diff_batched"] <= TOLERANCE


def test_exported_file_follows_its_inputs_device(exported):
    """No device is written into the file: with `device: cuda` the node loads it on the
    GPU and every tensor the model makes must be made there. (Checked on the graphs; no
    GPU here to run it on.)"""
    _, policy_file, _ = exported
    m = torch.jit.load(str(policy_file))
    graphs = list(ex.method_graphs(m))
    assert len(graphs) > 10
    for graph in graphs:
        assert not [n for n in graph.findAllNodes("prim::Constant") if n.output().type().kind() == "DeviceObjType"]
    assert 'torch.device("cpu")' not in m.core.policy.model.code


def test_the_node_environment_has_no_lerobot():
    # The parity above is only a proof that the file stands alone if LeRobot is absent there.
    r = subprocess.run([NODE_PYTHON, "-c", "import lerobot"], capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'lerobot'" in r.stderr


def test_metadata(exported):
    trained, policy_file, _ = exported
    run = trained.run
    meta = json.loads(torch.jit.load(str(policy_file)).metadata())
    any_size = run is LIVE_TOP
    assert meta == {
        "contract_version": 2,
        "name": "LeRobot act: train, checkpoint last",
        "kind": "chunk",
        "cameras": [{"name": cam, "height": h, "width": w, "resize": "area",
                     "expected_width": None if any_size else w, "expected_height": None if any_size else h}
                    for cam, (h, w) in run.cameras.items()],
        # From the dataset's meta/info.json, found through train_config.json.
        "state_names": SO101_JOINTS,
        "action_names": SO101_JOINTS,
        "action_mode": "absolute",
        "chunk_length": run.chunk_size,
        "control_rate_hz": 30.0,
        "tokenizer": None,
        "outputs": [],
        "patch_grid": [12, 16],
        "normalization": {"state_mean": [0.0] * 6, "state_std": [1.0] * 6,
                          "action_mean": [0.0] * 6, "action_std": [1.0] * 6},
    }


@pytest.fixture(scope="module")
def one_camera_run(tmp_path_factory):
    return make_act_run(tmp_path_factory.mktemp("names"), ONE_CAMERA)


def without_dataset(trained, tmp_path) -> Path:
    """The checkpoint folder alone, as one gets it from a colleague or a model hub."""
    alone = tmp_path / "pretrained_model"
    shutil.copytree(trained.checkpoint, alone)
    (alone / "train_config.json").unlink()
    return alone


def test_names_rate_and_cameras_from_flags_or_defaults(one_camera_run, tmp_path):
    ckpt = ex.load_checkpoint(without_dataset(one_camera_run, tmp_path))
    out = ex.Options(output=tmp_path / "p.pt")
    with pytest.raises(ex.ExportError, match="no control rate: give --fps"):
        ex.build_metadata(ckpt, out)

    out.fps = 50
    meta = ex.build_metadata(ckpt, out)
    assert meta["state_names"] == meta["action_names"] == [f"joint_{i}" for i in range(6)]
    assert meta["control_rate_hz"] == 50.0 and meta["cameras"][0]["name"] == "top"

    out.dataset_root = one_camera_run.dataset
    assert ex.build_metadata(ckpt, out)["state_names"] == SO101_JOINTS

    names = ["a", "b", "c", "d", "e", "f"]
    out.state_names, out.action_names, out.camera_names = names, names[::-1], ["scene"]
    out.any_camera_size, out.resize, out.patch_grid = True, "letterbox", (6, 8)
    meta = ex.build_metadata(ckpt, out)
    assert meta["state_names"] == names and meta["action_names"] == names[::-1]
    assert meta["cameras"] == [{"name": "scene", "height": 48, "width": 64, "resize": "letterbox",
                                "expected_width": None, "expected_height": None}]
    assert meta["patch_grid"] == [6, 8]

    for field_, value, message in (
        ("state_names", names[:5], "5 state names given; the policy's feature has 6"),
        ("camera_names", ["a", "b"], "2 camera names given; the policy has 1 image features"),
        ("patch_grid", (64, 16), "patch grid \\[64, 16\\] does not fit the smallest camera input \\(48x64\\)"),
        ("dataset_root", tmp_path / "nowhere", "has no meta/info.json"),
    ):
        bad = ex.Options(**{**out.__dict__, field_: value})
        with pytest.raises(ex.ExportError, match=message):
            ex.build_metadata(ckpt, bad)


def test_command_line_errors_say_what_to_do(one_camera_run, tmp_path, capsys):
    alone = without_dataset(one_camera_run, tmp_path)
    assert ex.main([str(alone), "-o", str(tmp_path / "p.pt")]) == 2
    assert "export_lerobot: error: no control rate: give --fps" in capsys.readouterr().err
    assert not (tmp_path / "p.pt").exists()

    (alone / "policy_preprocessor.json").unlink()
    assert ex.main([str(alone), "-o", str(tmp_path / "p.pt"), "--fps", "30"]) == 2
    assert "migrate_policy_normalization" in capsys.readouterr().err


def test_unknown_processor_step_is_refused(one_camera_run, tmp_path):
    # A step the export does not know would be silently skipped on the robot.
    alone = without_dataset(one_camera_run, tmp_path)
    pre = json.loads((alone / "policy_preprocessor.json").read_text())
    pre["steps"].insert(1, {"registry_name": "observation_processor", "config": {}})
    (alone / "policy_preprocessor.json").write_text(json.dumps(pre))
    with pytest.raises(ex.ExportError, match="step 'observation_processor'"):
        ex.load_checkpoint(alone)


def test_module_refuses_wrong_inputs_with_a_message(exported):
    trained, policy_file, _ = exported
    m = torch.jit.load(str(policy_file))
    images, state = as_inputs(trained.run, observations(trained.run, 1, seed=3))
    empty = torch.zeros(1, 0, dtype=torch.int64)
    n = len(images)
    h, w = next(iter(trained.run.cameras.values()))
    for bad_images, bad_state, message in (
        (images[:-1], state, f"expected {n} camera images, got {n - 1}"),
        ([images[0][:, :-1]] + images[1:], state, f"camera 0: expected uint8 \\[B, {h}, {w}, 3\\]"),
        ([images[0].float()] + images[1:], state, "camera 0: expected uint8"),
        (images, state[:, :5], "expected state \\[B, 6\\]"),
    ):
        with pytest.raises(torch.jit.Error, match=message):
            m(bad_images, bad_state, empty, empty.bool())


@pytest.mark.parametrize("mode", ["MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10", "IDENTITY"])
def test_feature_norm_is_lerobots_normalization(mode):
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.processor import NormalizerProcessorStep, UnnormalizerProcessorStep
    from lerobot.processor.converters import create_transition
    from lerobot.processor.core import TransitionKey

    rng = np.random.default_rng(5)
    lo = rng.normal(0, 10, 6).astype(np.float32)
    hi = lo + rng.uniform(0.5, 20, 6).astype(np.float32)
    hi[2] = lo[2]  # a joint that never moved in the dataset: LeRobot's eps branch
    stats = {"action": {"mean": lo, "std": hi - lo, "min": lo, "max": hi, "q01": lo, "q99": hi,
                        "q10": lo, "q90": hi}}
    features = {"action": PolicyFeature(FeatureType.ACTION, (6,))}
    norm_map = {FeatureType.ACTION: NormalizationMode(mode)}
    x = torch.from_numpy(rng.normal(0, 15, (3, 5, 6)).astype(np.float32))
    for step_class, inverse in ((NormalizerProcessorStep, False), (UnnormalizerProcessorStep, True)):
        step = step_class(features=features, norm_map=norm_map, stats=stats)
        want = step(create_transition(action=x))[TransitionKey.ACTION]
        got = ex.feature_norm(step, "action", inverse=inverse)(x)
        assert torch.equal(got, want), (mode, inverse, float((got - want).abs().max()))


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


def test_inspect_case_is_lerobots_chunk_of_its_pngs(exported, tmp_path):
    """The case written for the node's inspect command: its PNGs and joints, run through
    LeRobot, give its expected chunk exactly, and through the exported file within the
    tolerance."""
    trained, policy_file, result = exported
    ckpt = ex.load_checkpoint(trained.checkpoint)
    case = ex.write_inspect_case(ckpt, result.metadata, tmp_path / "case", policy_file)
    assert (tmp_path / "case" / case["policy"]).resolve() == policy_file.resolve()
    images = {cam: read_png(tmp_path / "case" / f) for cam, f in zip(trained.run.cameras, case["images"])}
    for cam, (h, w) in trained.run.cameras.items():
        assert images[cam].shape == (h, w, 3), "the node must not need to resize"
    state = np.array(case["joints"], np.float32)
    assert [float(v) for v in state] == case["joints"], "joints must be exact float32 values"
    want = lerobot_reference(trained.checkpoint)(images, state)
    assert torch.equal(want, torch.tensor(case["expected_actions"], dtype=torch.float32))
    got = ex.run_in_fresh_process(policy_file, [as_inputs(trained.run, [(images, state)])],
                                  python=NODE_PYTHON, threads=1)[0][0]
    assert float((got - want).abs().max()) <= case["tolerance"] == TOLERANCE
    line = json.loads((tmp_path / "case" / "inspect.jsonl").read_text())
    assert line == {"images": case["images"], "joints": case["joints"], "instruction": "", "out": "out"}


def test_node_inspect_reproduces_lerobot_chunk(exported, tmp_path):
    """The node's own libtorch path (tch): `vla_controller inspect` on the case's PNGs
    and joints gives LeRobot's chunk within 1e-4."""
    trained, policy_file, result = exported
    case = ex.write_inspect_case(ex.load_checkpoint(trained.checkpoint), result.metadata, tmp_path / "case",
                                 policy_file)
    r = subprocess.run([str(BIN), "inspect", "--policy", str(policy_file), "--batch",
                        str(tmp_path / "case" / "inspect.jsonl")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = np.array(json.loads((tmp_path / "case" / "out" / "explanation.json").read_text())["actions"])
    want = np.array(case["expected_actions"])
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max())
    print(f"\n{label(trained)}: max |node inspect - LeRobot| {diff:.3g} "
          f"(actions up to {float(np.abs(want).max()):.3g} in magnitude)")
    assert diff <= case["tolerance"]


def test_robot_units_become_the_metadata_normalization(one_camera_run, tmp_path):
    """A robot whose driver reports other units than the dataset was recorded in (here
    radians against degrees, and one joint with another zero): the node's metadata
    normalization carries the conversion, joint by joint."""
    ckpt = ex.load_checkpoint(one_camera_run.checkpoint)
    scale = [57.29578] * 5 + [100.0]
    offset = [0.0, 0.0, 0.0, 12.5, 0.0, -3.0]
    opts = ex.Options(output=tmp_path / "p.pt", robot_to_dataset_scale=scale, robot_to_dataset_offset=offset)
    norm = ex.build_metadata(ckpt, opts)["normalization"]
    q_robot = np.array([0.1, -0.4, 1.2, 0.3, -1.0, 0.02])
    # What the node does: (q - state_mean) / state_std into the module, and the module's
    # actions (dataset units) back with a * action_std + action_mean.
    q_dataset = (q_robot - norm["state_mean"]) / norm["state_std"]
    np.testing.assert_allclose(q_dataset, q_robot * scale + np.array(offset), rtol=1e-12)
    np.testing.assert_allclose(q_dataset * norm["action_std"] + norm["action_mean"], q_robot, rtol=1e-12)

    # Without units: the identity.
    plain = ex.build_metadata(ckpt, ex.Options(output=tmp_path / "p.pt"))["normalization"]
    assert plain == {"state_mean": [0.0] * 6, "state_std": [1.0] * 6, "action_mean": [0.0] * 6, "action_std": [1.0] * 6}
    for bad, message in (({"robot_to_dataset_scale": scale[:5]}, "one value per state joint"),
                         ({"robot_to_dataset_scale": [0.0] + scale[1:]}, "scale of 0")):
        with pytest.raises(ex.ExportError, match=message):
            ex.build_metadata(ckpt, ex.Options(output=tmp_path / "p.pt", **bad))
