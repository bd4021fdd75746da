"""vla_export.lerobot (python -m vla_export.lerobot) on LeRobot's own SmolVLAPolicy, built here on a tiny SmolVLM
made locally (random weights: no hub): the file's `encode` and `velocity`, integrated as
the contract says (`kind: flow`) in a process without LeRobot, give the chunk of
LeRobot's own sampling under the same noise, with instructions tokenized by the file's
own tokenizer. Runs in .venv-lerobot (scripts/setup.sh)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

from vla_export import lerobot as ex  # noqa: E402
from fixtures import NODE_PYTHON, SO101_JOINTS, TOLERANCE, SmolVLARun, make_smolvla_run  # noqa: E402

TASKS = ["pick up the red cube", "把蓝色圆柱体放到托盘右侧", "stack the green cube on the yellow cube please now 🙂"]


@pytest.fixture(scope="module", params=["longest", "max_length"])
def exported(request, tmp_path_factory):
    """LeRobot's default (pad each batch to its longest instruction) and padding to
    tokenizer_max_length, as the node does."""
    root = tmp_path_factory.mktemp(f"smolvla_{request.param}")
    trained = make_smolvla_run(root, SmolVLARun(pad_language_to=request.param))
    result = ex.export(trained.checkpoint, ex.Options(output=root / "policy.pt"))
    ckpt = ex.load_checkpoint(trained.checkpoint)
    return trained, ckpt, root / "policy.pt", result


def test_denoised_chunk_matches_lerobot_sampling(exported):
    trained, ckpt, policy_file, result = exported
    meta = result.metadata
    tok = meta["tokenizer"]
    text = torch.jit.load(str(policy_file)).tokenizer_json()
    observations = ex.random_observations(ckpt, meta, len(TASKS), seed=11)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(len(TASKS), meta["chunk_length"], meta["flow"]["padded_action_dim"], generator=g)
    ids, mask = ex.tokenize(text, TASKS, tok["max_length"], tok["pad_id"])
    want = torch.stack([ex.lerobot_chunk(ckpt, ex.lerobot_batch(ckpt, images, state, task=task), noise=noise[i:i + 1])[0]
                        for i, ((images, state), task) in enumerate(zip(observations, TASKS))])

    cases = [(*ex.as_batch(ckpt, [o]), ids[i:i + 1], mask[i:i + 1], noise[i:i + 1]) for i, o in enumerate(observations)]
    cases.append((*ex.as_batch(ckpt, observations), ids, mask, noise))
    got = [ex.flow_chunk(meta, x) for x in ex.run_in_fresh_process(policy_file, cases, python=NODE_PYTHON, threads=1)]
    single = max(float((g_[0] - w).abs().max()) for g_, w in zip(got, want))
    batched = float((got[-1] - want).abs().max())
    print(f"\nSmolVLA ({trained.run.pad_language_to}): max |exported - LeRobot| {single:.3g} one at a time, "
          f"{batched:.3g} batched; export's own check {result.check}")
    assert single <= TOLERANCE and batched <= TOLERANCE
    # Meaningful: the chunk follows the noise, the instruction and the images.
    assert float((want[0] - want[1]).abs().max()) > 1e3 * TOLERANCE
    images, state = observations[0]
    other_task = ex.lerobot_chunk(ckpt, ex.lerobot_batch(ckpt, images, state, task=TASKS[1]), noise=noise[:1])[0]
    assert float((other_task - want[0]).abs().max()) > 1e2 * TOLERANCE
    for key in ckpt.image_keys:
        changed = dict(images)
        changed[key] = np.ascontiguousarray(images[key][::-1])
        moved = ex.lerobot_chunk(ckpt, ex.lerobot_batch(ckpt, changed, state, task=TASKS[0]), noise=noise[:1])[0]
        assert float((moved - want[0]).abs().max()) > 1e2 * TOLERANCE, key


def test_metadata(exported):
    trained, ckpt, policy_file, _ = exported
    meta = json.loads(torch.jit.load(str(policy_file)).metadata())
    from lerobot.utils.constants import ACTION

    std, mean = ex.feature_norm(ckpt.unnormalizer, ACTION, inverse=True).affine()
    assert meta == {
        "contract_version": 2,
        "name": "LeRobot smolvla: train, checkpoint last",
        "kind": "flow",
        # Each at its dataset size; SmolVLA letterboxes them to 32x32 inside, as LeRobot does.
        "cameras": [{"name": "top", "height": 48, "width": 64, "resize": "area", "expected_width": 64,
                     "expected_height": 48},
                    {"name": "wrist", "height": 40, "width": 40, "resize": "area", "expected_width": 40,
                     "expected_height": 40}],
        "state_names": SO101_JOINTS,
        "action_names": SO101_JOINTS,
        "action_mode": "absolute",
        "chunk_length": 10,
        "control_rate_hz": 30.0,
        "tokenizer": {"type": "hf", "method": "tokenizer_json", "max_length": 16, "pad_id": 0},
        "outputs": [],
        "patch_grid": [12, 16],
        # The state is normalized inside; the integrated chunk is LeRobot's normalized
        # action, which the node unnormalizes with LeRobot's MEAN_STD statistics.
        "normalization": {"state_mean": [0.0] * 6, "state_std": [1.0] * 6, "action_mean": mean, "action_std": std},
        "flow": {"num_steps": 10, "time": "noise_at_one", "guidance": "autograd", "padded_action_dim": 32},
    }


def test_file_tokenizer_reads_instructions_as_lerobot_does(exported):
    """The file's tokenizer (SmolVLA's newline included) against LeRobot's tokenizer step,
    on English, Chinese, emoji, whitespace runs and an instruction longer than max_length."""
    from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

    _, ckpt, policy_file, result = exported
    tok = result.metadata["tokenizer"]
    text = torch.jit.load(str(policy_file)).tokenizer_json()
    images, state = ex.random_observations(ckpt, result.metadata, 1, seed=0)[0]
    # Not the empty instruction: LeRobot reads it as "\n", a tokenizers normalizer does
    # not run on empty text, so the file reads it as no tokens.
    strings = TASKS + ["  move   the\tarm  ", "x", "pick up the red cube " * 6, "ends with a newline\n"]
    ids, mask = ex.tokenize(text, strings, tok["max_length"], tok["pad_id"])
    assert bool(mask[strings.index("pick up the red cube " * 6)].all()), "the long one is cut at max_length"
    for i, s in enumerate(strings):
        batch = ex.lerobot_batch(ckpt, images, state, task=s)
        lerobot = batch[OBS_LANGUAGE_TOKENS][0][batch[OBS_LANGUAGE_ATTENTION_MASK][0]]
        assert ids[i][mask[i]].tolist() == lerobot.tolist(), repr(s)
        assert (ids[i][~mask[i]] == tok["pad_id"]).all()


def test_velocity_carries_gradients_to_x_t(exported):
    """`guidance: autograd`: real-time chunking's guided inpainting differentiates the
    velocity with respect to x_t, through the loaded file."""
    _, ckpt, policy_file, result = exported
    meta = result.metadata
    m = torch.jit.load(str(policy_file))
    images, state = ex.as_batch(ckpt, ex.random_observations(ckpt, meta, 2, seed=1))
    ids, mask = ex.tokenize(m.tokenizer_json(), TASKS[:2], meta["tokenizer"]["max_length"], meta["tokenizer"]["pad_id"])
    with torch.no_grad():
        context, outputs = m.encode(images, state, ids, mask)
    assert outputs == {}
    x = torch.randn(2, meta["chunk_length"], meta["flow"]["padded_action_dim"], requires_grad=True)
    v = m.velocity(x, torch.full((2,), 0.6), context)
    (grad,) = torch.autograd.grad(v[:, :, :6].square().sum(), x, retain_graph=True)
    assert grad.shape == x.shape and float(grad.abs().sum()) > 0
    # Each observation's velocity depends on its own x_t only.
    assert float(grad[0].abs().sum()) > 0 and float(grad[1].abs().sum()) > 0
    (grad0,) = torch.autograd.grad(v[0].sum(), x)
    assert float(grad0[1].abs().max()) == 0.0


def test_flow_file_refuses_wrong_inputs_with_a_message(exported):
    _, ckpt, policy_file, result = exported
    meta = result.metadata
    m = torch.jit.load(str(policy_file))
    images, state = ex.as_batch(ckpt, ex.random_observations(ckpt, meta, 1, seed=2))
    ids, mask = ex.tokenize(m.tokenizer_json(), TASKS[:1], 16, 0)
    with pytest.raises(torch.jit.Error, match="expected token_ids int64 and token_mask bool, both \\[1, 16\\]"):
        m.encode(images, state, ids[:, :8], mask[:, :8])
    with pytest.raises(torch.jit.Error, match="camera 1: expected uint8 \\[B, 40, 40, 3\\]"):
        m.encode([images[0], images[0]], state, ids, mask)
    context, _ = m.encode(images, state, ids, mask)
    with pytest.raises(torch.jit.Error, match="expected x_t \\[B, 10, 32\\]"):
        m.velocity(torch.zeros(1, 10, 6), torch.ones(1), context)


def test_inspect_case_carries_instruction_noise_and_lerobots_chunk(exported, tmp_path):
    """For a flow policy the case also holds the noise LeRobot's sampling started from:
    integrated from it, the file gives the case's chunk."""
    trained, ckpt, policy_file, result = exported
    meta = result.metadata
    case = ex.write_inspect_case(ckpt, meta, tmp_path / "case", policy_file)
    assert case["instruction"] == ex.CHECK_TASKS[0]
    noise = torch.tensor(case["noise"])[None]
    assert noise.shape == (1, 10, 32)
    images = {key: np.array(Image.open(tmp_path / "case" / f).convert("RGB"))
              for key, f in zip(ckpt.image_keys, case["images"])}
    state = np.array(case["joints"], np.float32)
    ids, mask = ex.tokenize(torch.jit.load(str(policy_file)).tokenizer_json(), [case["instruction"]],
                            meta["tokenizer"]["max_length"], meta["tokenizer"]["pad_id"])
    (x0,) = ex.run_in_fresh_process(policy_file, [(*ex.as_batch(ckpt, [(images, state)]), ids, mask, noise)],
                                    python=NODE_PYTHON, threads=1)
    got = ex.flow_chunk(meta, x0)[0]
    assert float((got - torch.tensor(case["expected_actions"])).abs().max()) <= case["tolerance"]


def test_what_cannot_be_exported_says_why(tmp_path):
    pi0 = tmp_path / "pi0"
    pi0.mkdir()
    (pi0 / "config.json").write_text(json.dumps({"type": "pi0"}))
    with pytest.raises(ex.ExportError, match="pi0.*patched transformers"):
        ex.export(pi0, ex.Options(output=tmp_path / "p.pt"))
