"""A soak: the live node under the benchmark's input load (three 640x480 cameras at
30 Hz, joint states at 200 Hz) with occlusion explanations running and the instruction
switched every 5 s, for VLA_SOAK_SECONDS (60 in `make test`; the long run:
`VLA_SOAK_SECONDS=1800 python -m pytest -s tests/ros/test_soak.py`).

After a warm-up it compares the first and the last window (five minutes each, or half
of what remains in a shorter run): resident memory (and its parts: the process's own
pages, mapped files, shared memory) and the heap in use (the node's `memory` status on
/diagnostics), each as the median of samples taken every 5 s (the
target is under 1% growth; the test fails only on clear growth, as memory moves by tens
of MiB while occlusion batches come and go), and the p99 of
stamp-to-chunk latency. At the end it prints every counter from /diagnostics and checks
that the node still answers parameter changes (set, then read back, through the
parameter services)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.qos import QoSProfile
from vla_controller_msgs.msg import InferenceTiming

from vla_demo.node_process import wait_for
from vla_demo.ros_peers import instruction, status, two_sided_scene
from vla_demo.ros_peers import ScenePublisher, SimArm

SECONDS = float(os.environ.get("VLA_SOAK_SECONDS", "60"))
#: Resident memory settles in the first 20 s (libtorch's and the allocator's caches);
#: on a long run, a minute.
WARMUP = 20.0 if SECONDS < 600 else 60.0
#: The compared windows: five minutes, or half of what follows the warm-up.
WINDOW = min(300.0, (SECONDS - WARMUP) / 2)
#: Memory growth the node is meant to stay under.
GROWTH_TARGET = 0.01


#: What resident memory is made of (/proc/<pid>/status): all of it, the process's own
#: (anonymous) pages, mapped files (the binary, libtorch) and shared memory (the
#: middleware's shared-memory transport, whose pages count once touched).
RESIDENT = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def resident_mib(pid: int) -> list[float]:
    fields = dict(l.split(":", 1) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in l)
    return [int(fields[k].split()[0]) / 1024 for k in RESIDENT]


def heap_in_use_mib(peers) -> float:
    """The heap in use, from the node's last `memory` status."""
    st = peers.recorder.last_status("memory")
    assert st is not None, "the node reports its memory on /diagnostics"
    return float(next(kv.value for kv in st.values if kv.key == "heap_in_use_mib"))


def call(node, kind, service, request):
    client = node.create_client(kind, service)
    assert client.wait_for_service(timeout_sec=10), f"{service} is offered"
    future = client.call_async(request)
    wait_for(future.done, 10, service)
    return future.result()


def answers_parameter_changes(node, value: float) -> bool:
    """Sets attention_threshold through /vla_controller/set_parameters and reads it back."""
    v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    r = call(node, SetParameters, "/vla_controller/set_parameters",
             SetParameters.Request(parameters=[Parameter(name="attention_threshold", value=v)]))
    got = call(node, GetParameters, "/vla_controller/get_parameters", GetParameters.Request(names=["attention_threshold"]))
    return r.results[0].successful and abs(got.values[0].double_value - value) < 1e-12


def test_soak(peers, start_node):
    assert WINDOW > 0, f"VLA_SOAK_SECONDS={SECONDS:.0f} leaves nothing after the {WARMUP:.0f} s warm-up"
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
    samples = []  # (seconds since start, heap in use, VmRSS, RssAnon, RssFile, RssShmem), MiB
    # Switch instructions now and then, as an operator would.
    while time.monotonic() - t_start < SECONDS:
        time.sleep(min(5.0, SECONDS - (time.monotonic() - t_start)))
        k = int((time.monotonic() - t_start) / 5) % 2
        cams.instruct(instruction(s, right if k else left))
        assert node.proc.poll() is None, "the node died"
        samples.append((time.monotonic() - t_start, heap_in_use_mib(peers), *resident_mib(node.proc.pid)))
    t_end = time.monotonic() - t_start
    first, last = (WARMUP, WARMUP + WINDOW), (t_end - WINDOW, t_end)
    within = lambda t, w: w[0] <= t <= w[1]  # noqa: E731
    medians = [[float(np.median([v[k] for v in samples if within(v[0], w)])) for w in (first, last)]
               for k in range(1, len(samples[0]))]
    heap, rss = medians[0], medians[1]
    with lock:
        ms = [[v for t, v in latencies if within(t - t_start, w)] for w in (first, last)]
    p99 = [float(np.percentile(v, 99)) for v in ms]
    cmds = peers.recorder.commands_since(time.monotonic() - 10.0)
    answered = answers_parameter_changes(peers.node, 0.45)
    counters = {kv.key: kv.value for kv in peers.recorder.last_status().values}

    print(f"\nsoak {SECONDS:.0f} s (warm-up {WARMUP:.0f} s, windows of {WINDOW:.0f} s)")
    for k, what in enumerate(("heap in use", *RESIDENT)):
        print(f"{what} every 5 s (MiB): " + " ".join(f"{v[k + 1]:.0f}" for v in samples))
    for (a, b), what in zip(medians, ("heap in use", *RESIDENT)):
        g = b / a - 1 if a else 0.0
        print(f"{what} median {a:.1f} -> {b:.1f} MiB: {g:+.2%} "
              f"({'within' if g < GROWTH_TARGET else 'BEYOND'} the {GROWTH_TARGET:.0%} target)")
    print(f"stamp-to-chunk p99 {p99[0]:.1f} -> {p99[1]:.1f} ms, p50 {np.median(ms[0]):.1f} -> {np.median(ms[1]):.1f} ms "
          f"({len(ms[0])} and {len(ms[1])} chunks)")
    print(f"{len(cmds) / 10.0:.1f} commands/s in the last 10 s; parameter change answered: {answered}")
    print("counters: " + ", ".join(f"{k}={v}" for k, v in counters.items()))

    assert status(peers)[0] < 2, status(peers)
    assert answered, "the node answers parameter changes at the end"
    assert int(counters["inference_errors"]) == 0 and int(counters["rejected_total"]) == 0, counters
    assert rss[1] <= rss[0] * 1.10 + 20, f"memory grew from {rss[0]:.1f} to {rss[1]:.1f} MiB"
    assert heap[1] <= heap[0] * 1.10 + 20, f"the heap in use grew from {heap[0]:.1f} to {heap[1]:.1f} MiB"
    assert p99[1] <= max(2 * p99[0], p99[0] + 20), "latency grew"
    assert len(cmds) >= 0.8 * 50 * 10.0, "commands kept their rate"
