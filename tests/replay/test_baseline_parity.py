"""The Python baseline of the benchmarks (benches/baseline) commands what the Rust node
commands: the same recording through `vla_controller replay` and through the baseline's
replay (the baseline node's pipeline, decoder and policy runner on the recording's
clock) gives the same commands at the same ticks, within 1e-3. Both replays infer every
camera set and apply each chunk at the time of its inputs, so the comparison is
deterministic. Also: the baseline's image decoding against its per-pixel definition."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "vla_controller"
BASELINE = ROOT / "benches" / "baseline" / "vla_baseline_node.py"
from vla_demo import bags
from vla_demo import scene as sc


def _baseline_pipeline():
    """benches/baseline/pipeline.py, the baseline's ROS-free core (a script folder, not
    a package)."""
    spec = importlib.util.spec_from_file_location("vla_baseline_pipeline", ROOT / "benches" / "baseline" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


_pipeline = _baseline_pipeline()
LAYOUTS, ImageDecoder, ImageRejected, spans = _pipeline.LAYOUTS, _pipeline.ImageDecoder, _pipeline.ImageRejected, _pipeline.spans

FAST = ["-p", "explanation_method:=policy_attention"]
TOLERANCE = 1e-3


def recording(path: Path, seconds: float, width: int = 640, height: int = 480, seed: int = 7) -> Path:
    """Three cameras at 30 Hz with jittered stamps and transport delays, one of them bgr8
    and one missing a few frames (the synchronizer drops their partners); joint states at
    100 Hz of an arm moving along a sine (so the pairing of sets with joint states and
    the step limit matter); an English instruction, then a Chinese one."""
    rng = np.random.default_rng(seed)
    s = sc.sample_scene(np.random.default_rng(2026), 4)
    renders = {c: sc.render(s, c, width, height) for c in sc.CAMERA_NAMES}
    msgs = []
    for k in range(int(seconds * 30)):
        nominal = bags.T0 + int(k * 1e9 / 30)
        for c in sc.CAMERA_NAMES:
            if c == "side" and k in (10, 11, 40):
                continue
            stamp = nominal + int(rng.integers(-4_000_000, 4_000_001))
            enc = "bgr8" if c == "top" else "rgb8"
            img = renders[c][:, :, ::-1] if enc == "bgr8" else renders[c]
            msgs.append((stamp + int(rng.integers(2_000_000, 6_000_001)), f"/camera/{c}/image_raw", bags.IMAGE,
                         bags.image_cdr(img, stamp, f"camera_{c}", enc)))
    for k in range(int(seconds * 100)):
        stamp = bags.T0 + k * 10_000_000
        q = bags.START + np.array([0.3, 0.2, -0.2, 0.1, 0.3, 0.01]) * np.sin(2 * np.pi * 0.7 * k / 100)
        msgs.append((stamp + 500_000, "/joint_states", bags.JOINT_STATE, bags.joint_state_cdr(q, stamp)))
    msgs.append((bags.T0, "/instruction", bags.STRING, bags.string_cdr("move above the red block")))
    msgs.append((bags.T0 + int(seconds / 2 * 1e9), "/instruction", bags.STRING, bags.string_cdr("抓起蓝色圆柱体")))
    msgs.sort(key=lambda m: m[0])
    return bags.write_bag(path, msgs)


def commands(bag: Path) -> list[tuple[int, list[float]]]:
    with AnyReader([bag], default_typestore=bags.TYPESTORE) as r:
        conns = [c for c in r.connections if c.topic == "/joint_commands"]
        return [(t, list(r.deserialize(raw, c.msgtype).data)) for c, t, raw in r.messages(connections=conns)]


def run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_baseline_commands_match_the_node(tmp_path, size):
    w, h = size
    seconds = 3.0 if size == (640, 480) else 1.5
    bag = recording(tmp_path / "in", seconds, w, h)
    params = ["-p", f"image_width:={w}", "-p", f"image_height:={h}", *FAST]
    run([str(BIN), "replay", str(bag), "-o", str(tmp_path / "rust"), "--quiet", *params])
    run([sys.executable, str(BASELINE), "replay", str(bag), "-o", str(tmp_path / "python"), *params])

    rust, python = commands(tmp_path / "rust"), commands(tmp_path / "python")
    assert len(rust) > 0.9 * seconds * 50
    assert [t for t, _ in python] == [t for t, _ in rust], "commands at the same ticks"
    a, b = np.array([c for _, c in rust]), np.array([c for _, c in python])
    assert np.abs(a - b).max() <= TOLERANCE, f"largest difference {np.abs(a - b).max():.2e}"
    # Not a trivial agreement: the arm moves, and the second instruction turns it.
    assert np.ptp(a, axis=0).max() > 0.1

    # The same accounting: sets, and every drop by reason.
    ra = json.loads((tmp_path / "rust" / "accounting.json").read_text())
    pa = json.loads((tmp_path / "python" / "accounting.json").read_text())
    assert pa["synchronized_sets"] == ra["synchronized_sets"] == pa["inferences"]
    rust_drops = {f"{t}/{r}": n for t, reasons in ra["dropped"].items() for r, n in reasons.items()}
    assert pa["dropped"] == rust_drops and any("sync" in k for k in rust_drops), (pa["dropped"], rust_drops)

    # And the project's own regression tool agrees.
    r = subprocess.run([str(BIN), "compare", str(tmp_path / "python"), str(tmp_path / "rust"),
                        "--tolerance", str(TOLERANCE)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def reference(a: np.ndarray, offs, out_w: int, out_h: int) -> np.ndarray:
    """Per output pixel: the rounded mean of its source span, `(sum + n // 2) // n`."""
    h, w = a.shape[:2]
    out = np.zeros((out_h, out_w, 3), np.uint8)
    for y, (y0, y1) in enumerate(spans(h, out_h)):
        for x, (x0, x1) in enumerate(spans(w, out_w)):
            n = (y1 - y0) * (x1 - x0)
            for c in range(3):
                out[y, x, c] = (int(a[y0:y1, x0:x1, offs[c]].astype(np.int64).sum()) + n // 2) // n
    return out


@pytest.mark.parametrize("w,h,out_w,out_h", [(40, 30, 8, 6), (80, 45, 8, 6), (13, 7, 5, 3), (3, 2, 6, 4),
                                             (4, 600, 1, 2), (300, 7, 96, 5)])
def test_decoding_is_the_exact_area_average(w, h, out_w, out_h):
    rng = np.random.default_rng(w * h)
    d = ImageDecoder(w, h, out_w, out_h)
    for enc, (ch, offs) in LAYOUTS.items():
        a = rng.integers(0, 256, (h, w, ch), dtype=np.uint8)
        want = reference(a, offs, out_w, out_h)
        assert np.array_equal(d.decode(w, h, enc, w * ch, a.tobytes()), want), enc
        padded = np.concatenate([a.reshape(h, w * ch), np.full((h, 5), 9, np.uint8)], 1)
        assert np.array_equal(d.decode(w, h, enc, w * ch + 5, padded.tobytes()), want), enc


def test_bad_images_are_rejected_with_the_node_reasons():
    d = ImageDecoder(4, 2, 2, 1)
    cases = [((4, 2, "yuv422", 8, 16), "unsupported encoding"),
             ((2, 2, "rgb8", 6, 12), "image size differs from image_width x image_height"),
             ((4, 2, "rgb8", 11, 22), "step below width x channels"),
             ((4, 2, "rgb8", 12, 23), "data length differs from step x height")]
    for (w, h, enc, step, n), kind in cases:
        with pytest.raises(ImageRejected) as e:
            d.decode(w, h, enc, step, bytes(n))
        assert e.value.kind == kind
