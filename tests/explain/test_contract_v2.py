"""Contract version 2 through `vla_controller inspect`: each camera resized to its own
input by its own mode, bit for bit as a plain NumPy reference (which is PyTorch's
bilinear arithmetic and LeRobot's resize_with_pad geometry); token occlusion for a
policy that returns no token weights; explanations that cannot be made refused up front.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vla_demo import contract_policies as cp
from vla_demo.node_process import BIN, ROOT
from vla_demo.png import read_png, write_png


def bilinear_axis(src: int, dst: int):
    """PyTorch's source indices for align_corners=False, and the second one's weight."""
    d = np.arange(dst, dtype=np.float64)
    s = np.maximum(src / dst * (d + 0.5) - 0.5, 0.0)
    i0 = np.minimum(s.astype(np.int64), src - 1)
    i1 = np.where(i0 < src - 1, i0 + 1, i0)
    return i0, i1, s - i0


def bilinear(img: np.ndarray, w: int, h: int) -> np.ndarray:
    y0, y1, hl = bilinear_axis(img.shape[0], h)
    x0, x1, wl = bilinear_axis(img.shape[1], w)
    p = img.astype(np.float64)
    w0, wl = (1.0 - wl)[None, :, None], wl[None, :, None]
    top = w0 * p[y0][:, x0] + wl * p[y0][:, x1]
    bottom = w0 * p[y1][:, x0] + wl * p[y1][:, x1]
    v = (1.0 - hl)[:, None, None] * top + hl[:, None, None] * bottom
    return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)


def letterbox(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """LeRobot's resize_with_pad: scale by the larger ratio, truncate, pad left and top."""
    ratio = max(img.shape[1] / w, img.shape[0] / h)
    rw, rh = max(1, min(w, int(img.shape[1] / ratio))), max(1, min(h, int(img.shape[0] / ratio)))
    out = np.zeros((h, w, 3), np.uint8)
    out[h - rh:, w - rw:] = bilinear(img, rw, rh)
    return out


def area(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """The mean over each output pixel's span, rounded half up."""
    span = lambda o, s, d: (o * s // d, max((o + 1) * s // d, o * s // d + 1))  # noqa: E731
    out = np.zeros((h, w, 3), np.uint8)
    for oy in range(h):
        y0, y1 = span(oy, img.shape[0], h)
        for ox in range(w):
            x0, x1 = span(ox, img.shape[1], w)
            block = img[y0:y1, x0:x1].reshape(-1, 3).astype(np.int64)
            out[oy, ox] = (block.sum(0) + len(block) // 2) // len(block)
    return out


def inspect(args: list[str], out, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(BIN), "inspect", *args, "-o", str(out)], cwd=ROOT, capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def png(path, rgb: np.ndarray) -> str:
    write_png(path, rgb)
    return str(path)


def test_reference_bilinear_is_pytorch_interpolate():
    """The reference's arithmetic is PyTorch's: the same values to float64 rounding, so
    after rounding to bytes a value on a .5 boundary may differ by one level."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for w, h in [(20, 15), (64, 50), (53, 37), (7, 30)]:
        t = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None]
        ref = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
        ours = bilinear(img, w, h).astype(np.float64)
        assert np.abs(ours - np.floor(ref + 0.5)).max() <= 1
        assert np.abs(ours - ref).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_camera_is_resized_by_its_mode_bit_for_bit(tmp_path, seed):
    rng = np.random.default_rng(seed)
    cams = [cp.camera("lb", 50, 37, "letterbox"), cp.camera("bl", 33, 20, "bilinear"), cp.camera("ar", 40, 30, "area")]
    sizes = [(int(rng.integers(20, 300)), int(rng.integers(20, 300))) for _ in cams]
    meta = cp.metadata(cams, ["a"], outputs=("patch_maps",), patch_grid=(5, 7))
    policy = cp.save(cp.MeanColour(meta), tmp_path / "policy.pt")
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]
    paths = [png(tmp_path / f"cam{k}.png", im) for k, im in enumerate(images)]
    inspect([*paths, "--joints", "0.5", "--policy", str(policy), "--method", "policy_attention", "--save-inputs"], tmp_path / "out")
    for cam, im, ref in zip(cams, images, (letterbox, bilinear, area)):
        seen = read_png(tmp_path / "out" / f"input_{cam['name']}.png")
        expected = ref(im, cam["width"], cam["height"])
        np.testing.assert_array_equal(seen, expected, err_msg=f"{cam['name']} from {im.shape[1]}x{im.shape[0]}")


def test_token_occlusion_finds_the_word_the_policy_reads(tmp_path):
    vocab = "abcdefghijklmnopqrstuvwxyz "
    meta = cp.metadata([cp.camera("main", 32, 24)], ["a"], tokenizer=cp.char_tokenizer(vocab), patch_grid=(3, 4))
    # Only the letter `r` moves the chunk: its weight must take everything.
    policy = cp.save(cp.MeanColour(meta, word_id=2 + vocab.index("r"), word_gain=0.05), tmp_path / "policy.pt")
    image = png(tmp_path / "main.png", np.full((24, 32, 3), 90, np.uint8))
    inspect([image, "--joints", "0", "--instruction", "go right", "--policy", str(policy)], tmp_path / "out")
    e = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert e["tokens"] == list("go right")
    w = np.array(e["token_weights"])
    assert w.sum() == pytest.approx(1.0, abs=1e-5)
    assert w[e["tokens"].index("r")] == pytest.approx(1.0, abs=1e-5) and np.delete(w, 3).max() < 1e-6
    assert (tmp_path / "out" / "language.png").exists()


def test_an_explanation_the_policy_cannot_give_is_refused(tmp_path):
    meta = cp.metadata([cp.camera("main", 32, 24)], ["a"], patch_grid=(3, 4))
    policy = cp.save(cp.MeanColour(meta), tmp_path / "policy.pt")
    image = png(tmp_path / "main.png", np.zeros((24, 32, 3), np.uint8))
    r = inspect([image, "--joints", "0", "--policy", str(policy), "--method", "policy_attention"], tmp_path / "out", check=False)
    assert r.returncode != 0 and "policy_attention needs the policy's patch_maps" in r.stderr, r.stderr
    # Without language there is no heatmap, and an instruction is refused.
    inspect([image, "--joints", "0", "--policy", str(policy)], tmp_path / "ok")
    assert not (tmp_path / "ok" / "language.png").exists()
    r = inspect([image, "--joints", "0", "--policy", str(policy), "--instruction", "go"], tmp_path / "no", check=False)
    assert r.returncode != 0 and "takes no instruction" in r.stderr
    big = cp.metadata([cp.camera("main", 8, 6)], ["a"], patch_grid=(12, 16))
    policy = cp.save(cp.MeanColour(big), tmp_path / "big.pt")
    r = inspect([image, "--joints", "0", "--policy", str(policy)], tmp_path / "big", check=False)
    assert r.returncode != 0 and "patch_grid 12x16 does not fit camera `main`" in r.stderr, r.stderr
