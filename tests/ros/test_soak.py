"""A bounded soak: the live node under the benchmark's input load (three 640x480 cameras
at 30 Hz, joint states at 200 Hz) with occlusion explanations running, for
VLA_SOAK_SECONDS (60 in `make test`; for a long run:
`VLA_SOAK_SECONDS=1800 python -m pytest -s tests/ros/test_soak.py`). Memory (medians of
the two halves after a 20 s warm-up) and latency (first and last 10 s) are printed and
compared: no growth, no crash."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.qos import QoSProfile
from vla_controller_msgs.msg import InferenceTiming

from vla_demo.node_process import wait_for
from vla_demo.ros_peers import instruction, status, two_sided_scene
from vla_demo.ros_peers import ScenePublisher, SimArm

SECONDS = float(os.environ.get("VLA_SOAK_SECONDS", "60"))
WINDOW = 10.0
#: Resident memory settles in the first 20 s (libtorch's and the allocator's caches):
#: growth is measured from then on.
WARMUP = 20.0


def rss_mib(pid: int) -> float:
    line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def test_soak(peers, start_node):
    s, left, right = two_sided_scene(27)
    cams = ScenePublisher(peers.node, s)
    SimArm(peers.node, np.array([0.0, 1.2, -1.8, -0.9, 0.0, 0.04]), rate_hz=200.0)
    peers.recorder.attach(peers.node)
    lock = threading.Lock()
    latencies: list[tuple[float, float]] = []  # (monotonic time, stamp-to-chunk ms)

    def on_chunk(m):
        ns = lambda t: t.sec * 10**9 + t.nanosec  # noqa: E731
        with lock:
            latencies.append((time.monotonic(), (ns(m.finished) - ns(m.source)) / 1e6))

    peers.node.create_subscription(InferenceTiming, "/vla_controller/timing/chunk", on_chunk, QoSProfile(depth=1000))
    peers.start()
    cams.instruct(instruction(s, left))
    node = start_node()
    wait_for(lambda: status(peers) and status(peers)[1] == "running", 60, "the node running")
    t_start = time.monotonic()
    samples = []  # (seconds since start, RSS MiB)
    # Switch instructions now and then, as an operator would.
    while time.monotonic() - t_start < SECONDS:
        time.sleep(min(5.0, SECONDS - (time.monotonic() - t_start)))
        k = int((time.monotonic() - t_start) / 5) % 2
        cams.instruct(instruction(s, right if k else left))
        assert node.proc.poll() is None, "the node died"
        samples.append((time.monotonic() - t_start, rss_mib(node.proc.pid)))
    # Resident memory moves by some 10-30 MiB from sample to sample (buffers of the
    # occlusion batches come and go): compare the medians of the two halves after the
    # warm-up.
    middle = WARMUP + (SECONDS - WARMUP) / 2
    rss_start = float(np.median([r for t, r in samples if WARMUP <= t < middle]))
    rss_end = float(np.median([r for t, r in samples if t >= middle]))
    t_end = time.monotonic()
    with lock:
        first = [ms for t, ms in latencies if t_start <= t < t_start + WINDOW]
        last = [ms for t, ms in latencies if t_end - WINDOW <= t <= t_end]
    p99 = lambda v: float(np.percentile(v, 99))  # noqa: E731
    cmds = peers.recorder.commands_since(t_end - WINDOW)
    print("\nRSS every 5 s (MiB): " + " ".join(f"{r:.0f}" for _, r in samples))
    print(f"soak {SECONDS:.0f} s: RSS median {rss_start:.1f} -> {rss_end:.1f} MiB; stamp-to-chunk p50 "
          f"{np.median(first):.1f} -> {np.median(last):.1f} ms, p99 {p99(first):.1f} -> {p99(last):.1f} ms; "
          f"{len(cmds) / WINDOW:.1f} commands/s at the end")
    assert status(peers)[0] < 2, status(peers)
    assert rss_end <= rss_start * 1.10 + 20, f"memory grew from {rss_start:.1f} to {rss_end:.1f} MiB"
    assert p99(last) <= max(2 * p99(first), p99(first) + 20), "latency grew"
    assert len(cmds) >= 0.8 * 50 * WINDOW, "commands kept their rate"
