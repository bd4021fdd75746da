#!/usr/bin/env python3
"""Checks of vla_demo.scene, the generator behind the demo policy and the tests, and of
policy/demo_policy.pt through torch. Runs under pytest or as a plain script:

    .venv/bin/python tests/demo_policy/test_scene_and_policy.py
"""

from __future__ import annotations

import time

import numpy as np


from vla_demo import scene as S
from vla_demo.node_process import DEMO_POLICY, FLOW_DEMO_POLICY

POLICY = DEMO_POLICY


def test_scene_is_deterministic_and_valid():
    for seed in range(50):
        a = S.sample_scene(np.random.default_rng(seed))
        b = S.sample_scene(np.random.default_rng(seed))
        assert a == b
        assert 3 <= len(a.items) <= 5
        assert len({(it.colour, it.shape) for it in a.items}) == len(a.items)
        for i, it in enumerate(a.items):
            assert S.WORKSPACE_X[0] <= it.x <= S.WORKSPACE_X[1]
            assert S.WORKSPACE_Y[0] <= it.y <= S.WORKSPACE_Y[1]
            assert S._tray_distance(a.tray_xy, a.tray_yaw, it.x, it.y) > S._FOOTPRINT[it.shape]
            for o in a.items[i + 1:]:
                assert np.hypot(it.x - o.x, it.y - o.y) >= S.MIN_ITEM_SPACING


def test_render_shapes_determinism_and_speed():
    sc = S.sample_scene(np.random.default_rng(3))
    for cam in S.CAMERA_NAMES:
        img = S.render(sc, cam)
        assert img.dtype == np.uint8 and img.shape == (480, 640, 3)
        assert np.array_equal(img, S.render(sc, cam))
        a = S.render(sc, cam, rng=np.random.default_rng(1))
        assert np.array_equal(a, S.render(sc, cam, rng=np.random.default_rng(1)))
        assert S.render(sc, cam, 320, 240).shape == (240, 320, 3)
    t0 = time.perf_counter()
    for _ in range(5):
        for cam in S.CAMERA_NAMES:
            S.render(sc, cam)
    assert (time.perf_counter() - t0) / 5 < 0.1


def test_every_item_is_visible_in_every_view():
    for seed in range(20):
        sc = S.sample_scene(np.random.default_rng(seed))
        for cam in S.CAMERA_NAMES:
            for i in range(len(sc.items)):
                m = S.object_mask(sc, i, cam, 640, 480)
                assert m.dtype == bool and m.shape == (480, 640)
                # Occlusion may hide part of an item in the angled views, never all of
                # it from above.
                if cam == "top":
                    assert m.sum() > 200, (seed, cam, i)


def test_downsample_matches_the_integer_formula():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (480, 640, 3)).astype(np.uint8)
    out = S.downsample(img, 5)
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    ref = img.reshape(96, 5, 128, 5, 3).sum(axis=(1, 3), dtype=np.int64)
    assert np.array_equal(out, ((ref + 12) // 25).astype(np.uint8))
    # Rounding: a block summing to 12 gives 0, one summing to 13 gives 1.
    tiny = np.zeros((5, 5, 1), np.uint8)
    tiny[0, :, 0] = [3, 3, 3, 3, 0]
    assert S.downsample(tiny, 5)[0, 0, 0] == 0
    tiny[0, 4, 0] = 1
    assert S.downsample(tiny, 5)[0, 0, 0] == 1


def test_tokenizer_follows_the_contract():
    meta = S.TOKENIZER_META
    ids, mask = S.tokenize("  Move above the RED Block\t", meta)
    assert ids.dtype == np.int64 and mask.dtype == bool and ids.shape == (S.MAX_TOKENS,)
    text = "move above the red block"
    assert mask.sum() == len(text)
    assert list(ids[: len(text)]) == [2 + meta["vocab"].index(c) for c in text]
    assert (ids[len(text):] == 0).all()
    ids, mask = S.tokenize("抓起红色球", meta)
    assert mask.sum() == 5 and (ids[:5] >= 2).all()
    ids, _ = S.tokenize("É€", meta)  # not in the vocabulary; non-ASCII is not lowered
    assert list(ids[:2]) == [1, 1]
    ids, mask = S.tokenize("a" * 100, meta)
    assert mask.all() and (ids == 2 + meta["vocab"].index("a")).all()
    for lang in S.TEMPLATES:
        for v in S.VERBS:
            for c in S.COLOURS:
                for s in S.SHAPES:
                    ids, mask = S.tokenize(S.instruction_text(c, s, v, lang), meta)
                    assert (ids[mask] >= 2).all(), "every template character is in the vocabulary"


def test_ik_fk_round_trip_and_limits():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        sc = S.sample_scene(rng)
        i = int(rng.integers(len(sc.items)))
        _, verb = S.make_instruction(sc, i, rng)
        p = S.target_xyz(sc, i, verb)
        q = S.ik(p)
        assert np.allclose(S.fk(q), p, atol=1e-9)
        for qq in (q, S.random_start(rng)):
            assert (qq >= S.JOINT_LOWER).all() and (qq <= S.JOINT_UPPER).all()
        # tool vertical: the absolute tool angle is -90 degrees
        assert abs(q[1] + q[2] + q[3] + np.pi / 2) < 1e-9


def test_expert_chunk():
    q0 = np.zeros(6)
    q1 = np.arange(6.0)
    ch = S.expert_chunk(q0, q1)
    assert ch.shape == (25, 6)
    assert np.allclose(ch[0], q1 * (1 - np.exp(-1 / 8)))
    assert np.allclose(ch[24], q1 * (1 - np.exp(-25 / 8)))


def test_instructions_name_the_item():
    rng = np.random.default_rng(0)
    sc = S.sample_scene(rng)
    for lang in ("en", "zh"):
        for _ in range(10):
            text, verb = S.make_instruction(sc, 0, rng, lang=lang)
            it = sc.items[0]
            assert verb in S.VERBS
            assert len(S.word_spans(text, it.colour, it.shape)) == 2, text


def test_placement_task():
    """Placement points lie in the named half of the tray, within joint limits; the
    halves of the tray split its visible pixels; the side word is found in both
    languages; the placement vocabulary extends the reaching one without moving an id."""
    rng = np.random.default_rng(5)
    assert S.PLACE_TOKENIZER_META["vocab"].startswith(S.VOCAB)
    for _ in range(300):
        sc = S.sample_scene(rng)
        i = int(rng.integers(len(sc.items)))
        for side, sign in (("left", 1.0), ("right", -1.0)):
            p = S.target_xyz(sc, i, "put", side)
            assert np.allclose(p, S.placement_xyz(sc, i, side))
            assert np.isclose(S.tray_side_of(sc, p[:2]), sign * S.PLACEMENT_OFFSET)
            assert np.isclose(p[2], S.TRAY_SIZE[2] + sc.items[i].top)
            q = S.ik(p)
            assert (q >= S.JOINT_LOWER).all() and (q <= S.JOINT_UPPER).all()
            for lang in ("en", "zh"):
                text = S.instruction_text(sc.items[i].colour, sc.items[i].shape, "put", lang, side)
                a, b = S.side_span(text, side)
                assert text[a:b] in (side, S.ZH_SIDES[side])
                ids, mask = S.tokenize(text, S.PLACE_TOKENIZER_META)
                assert (ids[mask] >= 2).all()
    assert S.target_xyz(sc, i, "put")[2] == sc.items[i].top, "the reaching task's put heads for the item"
    left, right = S.tray_half_masks(sc, "top")
    _, labels = S._rasterize(sc, "top", 640, 480)
    assert not (left & right).any() and ((left | right) == (labels == -2)).all()
    assert left.sum() > 0.3 * (labels == -2).sum() and right.sum() > 0.3 * (labels == -2).sum()


def test_exported_policy():
    from vla_demo.check_policy import check_policy

    check_policy(POLICY)


def test_exported_flow_policy():
    from vla_demo.check_policy import check_policy

    assert check_policy(FLOW_DEMO_POLICY)["kind"] == "flow"


def test_flow_noise_is_standard_normal_and_seeded():
    from vla_demo import flow

    a = flow.gaussian(1_700_000_000_123_456_789, 100_000)
    assert a.dtype == np.float32 and np.isfinite(a).all()
    assert abs(a.mean()) < 0.01 and abs(a.var() - 1) < 0.02
    assert np.array_equal(flow.gaussian(42, 5), flow.gaussian(42, 7)[:5])
    assert not np.array_equal(flow.gaussian(42, 5), flow.gaussian(43, 5))
    # src/policy/noise.rs pins the same values.
    assert flow.gaussian(42, 4).tolist() == np.array([0.41471976, 0.65268123, -0.89188623, 1.3268336], np.float32).tolist()


def test_every_generated_instruction_fits_the_policy_token_limit():
    """The node refuses instructions longer than the policy's token limit, so the
    generator's own instructions must all fit."""
    import json

    import torch

    limit = json.loads(torch.jit.load(str(POLICY)).metadata())["tokenizer"]["max_length"]
    longest = max(
        (S.instruction_text(c, s, v, lang) for c in S.COLOURS for s in S.SHAPES for v in S.VERBS for lang in ("en", "zh")),
        key=len,
    )
    assert len(longest) <= limit, f"{longest!r} has {len(longest)} characters, the policy takes {limit}"


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            print(f"ok  {name}")
