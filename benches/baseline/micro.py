"""Micro benchmarks of the baseline's per-message work, each against what it replaced
(BENCHMARKS.md, "What each technique of the baseline brings"):

- area-averaging a camera image to 128x96: the earlier baseline's
  `reshape(...).sum(axis=(1, 3), dtype=uint32)` and rows in uint16 with a matrix
  product for the columns, against `ImageDecoder`;
- taking an image: rclpy's deserialization into a sensor_msgs/Image against the copy a
  raw (`raw=True`) take makes and `parse_image_cdr`;
- drawing one overlay.

    python benches/baseline/micro.py [--runs 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from pipeline import ImageDecoder, spans  # noqa: E402
from vla_baseline_node import OverlayRenderer, parse_image_cdr  # noqa: E402
from vla_demo import scene as sc  # noqa: E402


def timed(f, runs: int) -> str:
    f()
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    t = np.array(t) * 1e3
    return f"min {t.min():.3f}  p50 {np.percentile(t, 50):.3f}  p99 {np.percentile(t, 99):.3f} ms"


def reshape_sum(a: np.ndarray, f: int) -> np.ndarray:
    """The earlier baseline's area average (integer factors only)."""
    h, w = a.shape[:2]
    s = a.reshape(h // f, f, w // f, f, 3).sum(axis=(1, 3), dtype=np.uint32)
    return ((s + f * f // 2) // (f * f)).astype(np.uint8)


class MatmulColumns:
    """Rows summed in uint16 as `ImageDecoder` does, then the columns by one matrix
    product with a 0/1 span matrix in float32 (sums below 2^24 are exact), then the same
    rounding division: the variant the issue that rebuilt the baseline timed at 0.35 ms."""

    def __init__(self, d: ImageDecoder, width: int):
        self.d = d
        m = np.zeros((width, d.out_w), np.float32)
        for c, (lo, hi) in enumerate(spans(width, d.out_w)):
            m[lo:hi, c] = 1.0
        self.m = m
        self.rows = np.empty((d.out_h, width, 3), d.row_type)
        self.n = (d.rows.lengths[:, None] * d.cols.lengths[None, :])[:, :, None]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        self.d._sum(img, self.d.rows, 0, self.rows)
        cols = np.matmul(self.rows.transpose(0, 2, 1).astype(np.float32), self.m).transpose(0, 2, 1)
        s = cols.astype(np.uint32)
        return ((s + self.n // 2) // self.n).astype(np.uint8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    n = ap.parse_args().runs
    scene = sc.sample_scene(np.random.default_rng(2026), 4)
    for w, h in ((640, 480), (1280, 720)):
        img = sc.render(scene, "main", w, h)
        d = ImageDecoder(w, h, 128, 96)
        data = img.tobytes()
        print(f"{w}x{h} to 128x96, area average:")
        if w % 128 == 0 and h % 96 == 0:
            f = w // 128
            assert np.array_equal(reshape_sum(img, f), d.decode(w, h, "rgb8", w * 3, data))
            print(f"  reshape(...).sum(axis=(1, 3)) into uint32 (earlier baseline): {timed(lambda: reshape_sum(img, f), n // 10)}")
        mm = MatmulColumns(d, w)
        assert np.array_equal(mm(img), d.decode(w, h, "rgb8", w * 3, data))
        print(f"  rows in uint16, columns by a matrix product (float32):          {timed(lambda: mm(img), n)}")
        print(f"  ImageDecoder (rows in uint16, strided adds):                    {timed(lambda: d.decode(w, h, 'rgb8', w * 3, data), n)}")
        msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=data)
        msg.header.frame_id = "camera_main"
        raw = serialize_message(msg)
        print(f"{w}x{h}, taking the message:")
        print(f"  deserialized into sensor_msgs/Image:                 {timed(lambda: deserialize_message(raw, Image), n)}")
        print(f"  raw: a copy of the serialized bytes, then parsed:    "
              f"{timed(lambda: parse_image_cdr(bytes(memoryview(raw))), n)}")
    grid = np.random.default_rng(0).random((12, 16)).astype(np.float32)
    cam = sc.render(scene, "main")
    ov = OverlayRenderer(480, 640, 12, 16, 0.4)
    print(f"one 640x480 overlay: {timed(lambda: ov(cam, grid), n // 4)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
