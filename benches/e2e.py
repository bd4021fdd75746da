"""`make bench-e2e`: the live node against the Python baseline (benches/baseline), in one
run, alternating, over a real ROS 2 graph; with `--sweep`, the load at which each breaks.

A peer publishes the cameras (three 640x480 rgb8 at 30 Hz by default; each set stamped
with the time its first image is published), joint_states (200 Hz) and an instruction.
Both nodes publish each chunk's timing (~/timing/chunk, vla_controller_msgs/
InferenceTiming: the set's stamp and when its stages ended, on the system clock), the
stamp of the set behind each command (~/timing/command) and their counters
(/diagnostics), so on one clock, side by side with the ratio Python / Rust:

- time outside the forward pass: from the publication of a set's last image to the
  inference thread starting on it (transport, decoding, synchronization, hand-off);
  what the node adds to the policy's own time;
- CPU time per camera set: the node's CPU seconds (/proc) over the measured window,
  divided by the sets published in it;
- peak resident memory (VmHWM);
- control jitter: how far the intervals between commands stray from the period;
- input to chunk: to the chunk being ready, as the peer receives it;
- input to command: to the first command that uses it. The control tick bounds it: a
  chunk waits up to a period (20 ms at 50 Hz) for the next tick, whichever node made it;
- sets dropped (published, never inferred), each node's own drops by reason, sets it
  superseded (newest wins);
- the peer's own CPU (its publishing thread, and its whole process), since on a small
  machine it takes its share of the cores. Its publishing thread runs under SCHED_FIFO
  above the nodes' threads (`--peer-priority`), as cameras keep their rate whatever the
  controller does; the sweep prints the rate it achieved.

    python benches/e2e.py [--frames 300] [--rounds 2] [--only rust|python] [-p name:=value]
    python benches/e2e.py --sweep [--sweep-cameras 3,6] [--sweep-sizes 640x480,1280x720]
                          [--sweep-rates 30,60] [--sweep-joint-hz 200,500] [--sweep-seconds 6]

The sweep runs each node once per point (cameras x image size x camera rate x joint
state rate; 16 points, 11-12 minutes on a busy 2-core host) and prints, per point, the
rate the peer held, each node's drops, p99 outside the forward pass and CPU, and where
each first drops sets or passes 10 ms at p99 outside the forward pass. Six cameras use a policy of the demo's
architecture made for six cameras, untrained (same cost per camera; only timing is
measured). Results go to target/bench-e2e.json or target/bench-sweep.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(102, 200)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import rclpy  # noqa: E402
import torch  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from std_msgs.msg import Float64MultiArray, Header, String  # noqa: E402
from vla_controller_msgs.msg import InferenceTiming  # noqa: E402

from vla_demo import scene as sc  # noqa: E402
from vla_demo.model import DemoPolicy  # noqa: E402
from vla_demo.node_process import DEMO_POLICY as POLICY, PARAMS, ROOT, NodeProcess, node_command  # noqa: E402
from vla_demo.ros_peers import LATCHED, RELIABLE, image_msg  # noqa: E402

START = [0.0, 1.2, -1.8, -0.9, 0.0, 0.04]
#: Overhead at p99 beyond which the sweep calls a node overloaded.
OVERHEAD_LIMIT_MS = 10.0
#: SCHED_FIFO priority of the peer's publishing thread, above the nodes' (50): cameras
#: do not slow down when the controller is busy, so the load stays what the point says.
PEER_PRIORITY = 60
# The same work for both: explanations from the policy's own maps at 5 Hz.
COMMON = ["-p", "explain_rate_hz:=5.0"]
NODES = {
    "rust": [*node_command(policy=None), *COMMON,
             "-p", "explanation_method:=policy_attention"],
    "python": [sys.executable, str(ROOT / "benches/baseline/vla_baseline_node.py"), "--ros-args", "--params-file",
               str(PARAMS), *COMMON, "-p", "explanation_method:=policy_attention"],
}
LABELS = {"rust": "Rust node", "python": "Python baseline"}


@dataclass(frozen=True)
class Point:
    """One load: cameras, their image size and rate, and the joint state rate."""
    cameras: int = 3
    width: int = 640
    height: int = 480
    rate_hz: float = 30.0
    joint_hz: float = 200.0

    @property
    def camera_names(self) -> list[str]:
        return list(sc.CAMERA_NAMES) + [f"extra{k}" for k in range(1, self.cameras - len(sc.CAMERA_NAMES) + 1)]

    def policy(self) -> Path:
        return POLICY if self.cameras == len(sc.CAMERA_NAMES) else policy_for_cameras(self.camera_names)

    def node_params(self) -> list[str]:
        return ["-p", f"policy_path:={self.policy()}", "-p", f"camera_names:=[{','.join(self.camera_names)}]",
                "-p", f"image_width:={self.width}", "-p", f"image_height:={self.height}"]

    def label(self) -> str:
        return f"{self.cameras} x {self.width}x{self.height} @ {self.rate_hz:g} Hz, joints {self.joint_hz:g} Hz"

    def load(self) -> float:
        """Camera bytes per second: the sweep's order."""
        return self.cameras * self.width * self.height * 3 * self.rate_hz


def policy_for_cameras(names: list[str]) -> Path:
    """The demo policy's architecture and metadata for `names`, untrained (seeded), as
    python/train_demo_policy.py would export it: the same work per camera as the demo
    policy, for timing only."""
    out = ROOT / "target" / "bench-policies" / f"demo_policy_{len(names)}cam.pt"
    if out.exists():
        return out
    meta = json.loads(torch.jit.load(str(POLICY)).metadata())
    meta.update(camera_names=names, name=f"untrained {len(names)}-camera demo architecture (benchmark only)")
    tok = meta["tokenizer"]
    torch.manual_seed(0)
    model = DemoPolicy(json.dumps(meta, ensure_ascii=False), vocab_size=len(tok["vocab"]), n_cams=len(names),
                       space_id=2 + tok["vocab"].index(" ")).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(model), str(out))
    return out


def percentiles(v):
    if not v:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    a = np.array(v)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max()), "n": len(a)}


def proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and peak resident memory in MiB of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return cpu, int(hwm.split()[1]) / 1024


def floor_forward_ms(policy: Path = POLICY, runs: int = 200, gap_s: float = 0.0) -> dict:
    """The policy's forward pass alone in this process, back to back or `gap_s` apart."""
    m = torch.jit.load(str(policy))
    meta = json.loads(m.metadata())
    c, h, w = len(meta["camera_names"]), meta["image_height"], meta["image_width"]
    L, A = meta["tokenizer"]["max_length"], meta["action_dim"]
    args = (torch.zeros(1, c, h, w, 3, dtype=torch.uint8), torch.zeros(1, A), torch.zeros(1, L, dtype=torch.int64),
            torch.ones(1, L, dtype=torch.bool))
    times = []
    with torch.no_grad():
        for k in range(runs + 20):
            time.sleep(gap_s)
            t0 = time.perf_counter()
            m(*args)
            if k >= 20:
                times.append((time.perf_counter() - t0) * 1e3)
    return percentiles(times)


class Bench:
    def __init__(self, node):
        self.node = node
        self.lock = threading.Lock()
        s = sc.sample_scene(np.random.default_rng(2026), 4)
        self.scene = s
        self.cams: dict = {}
        self.imgs: dict = {}
        self.renders: dict = {}
        self.joints = node.create_publisher(JointState, "joint_states", RELIABLE)
        self.instr = node.create_publisher(String, "instruction", LATCHED)
        qos = QoSProfile(depth=100)
        node.create_subscription(InferenceTiming, "/vla_controller/timing/chunk", self._inference, qos)
        node.create_subscription(Header, "/vla_controller/timing/command", lambda m: self._timing(m, self.command), qos)
        node.create_subscription(Float64MultiArray, "joint_commands", self._command, RELIABLE)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, QoSProfile(depth=10))
        self.point = None
        self.reset()

    def configure(self, point: Point):
        """Publishers and images for `point`'s cameras (extra cameras repeat the three
        views: the same bytes to move and decode as a real camera's)."""
        self.point = point
        for k, name in enumerate(point.camera_names):
            view = sc.CAMERA_NAMES[k % len(sc.CAMERA_NAMES)]
            if (view, point.width) not in self.renders:
                self.renders[view, point.width] = sc.render(self.scene, view, point.width, point.height)
            self.imgs[name] = image_msg(self.renders[view, point.width], f"camera_{name}")
            if name not in self.cams:
                self.cams[name] = self.node.create_publisher(Image, f"camera/{name}/image_raw", RELIABLE)
        self.active = [(self.cams[n], self.imgs[n]) for n in point.camera_names]

    def reset(self):
        with self.lock:
            self.published = {}  # set stamp -> wall time its last image was published (ns)
            self.chunk, self.command = {}, {}
            self.stages = {}  # set stamp -> (received, queued, started, finished), node's wall clock (ns)
            self.counters = {}  # the node's last /diagnostics values
            self.command_times = []
            self.sets = 0

    def _timing(self, msg, into):
        t = time.time_ns()
        key = msg.stamp.sec * 10**9 + msg.stamp.nanosec
        with self.lock:
            into.setdefault(key, t)

    def _inference(self, msg):
        t = time.time_ns()
        key = msg.source.sec * 10**9 + msg.source.nanosec
        stages = tuple(s.sec * 10**9 + s.nanosec for s in (msg.received, msg.queued, msg.started, msg.finished))
        with self.lock:
            self.chunk.setdefault(key, t)
            self.stages.setdefault(key, stages)

    def _diagnostics(self, msg):
        for st in msg.status:
            if st.name.startswith("/vla_controller") and st.name.endswith(": pipeline"):
                with self.lock:
                    self.counters = {kv.key: kv.value for kv in st.values}

    def _command(self, _msg):
        with self.lock:
            self.command_times.append(time.time_ns())

    def publish_set(self):
        stamp = time.time_ns()
        for pub, m in self.active:
            m.header.stamp.sec, m.header.stamp.nanosec = stamp // 10**9, stamp % 10**9
            pub.publish(m)
        with self.lock:
            self.published[stamp] = time.time_ns()
            self.sets += 1

    def publish_joints(self):
        m = JointState(name=list(sc.JOINT_NAMES), position=START)
        t = time.time_ns()
        m.header.stamp.sec, m.header.stamp.nanosec = t // 10**9, t % 10**9
        self.joints.publish(m)


def peer_priority(priority: int) -> None:
    """The calling (publishing) thread under SCHED_FIFO `priority`, or back to normal with 0."""
    try:
        if priority > 0:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        else:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as e:
        print(f"peer priority not applied ({e}): the peer publishes at normal priority")


def run_once(name: str, bench: Bench, point: Point, frames: int, warmup: int, extra: list[str],
             priority: int = PEER_PRIORITY) -> dict:
    proc = NodeProcess(NODES[name] + point.node_params() + extra, log=ROOT / "target" / f"bench-e2e-{name}.log")
    bench.configure(point)
    bench.reset()
    bench.instr.publish(String(data="move above the red block"))
    deadline = time.monotonic() + 60
    period, jperiod = 1 / point.rate_hz, 1 / point.joint_hz
    t_next, j_next = time.monotonic(), time.monotonic()
    # Feed until the node produces chunks, then `warmup` more sets, then measure.
    measuring_from = None
    peer_priority(priority)
    while True:
        now = time.monotonic()
        if now >= j_next:
            bench.publish_joints()
            j_next += jperiod
        if now >= t_next:
            bench.publish_set()
            t_next += period
            with bench.lock:
                if measuring_from is None and bench.chunk and bench.sets > warmup:
                    measuring_from = max(bench.published)
                    first_set = bench.sets
                    start = (time.monotonic(), proc_usage(proc.pid)[0], time.thread_time(), time.process_time())
                if measuring_from is not None and bench.sets - first_set >= frames:
                    break
            if measuring_from is None and (now > deadline or proc.poll() is not None):
                peer_priority(0)
                proc.stop(timeout=0)
                raise RuntimeError(f"{name}: no chunk within 60 s; see target/bench-e2e-{name}.log")
        time.sleep(max(0.0, min(t_next, j_next) - time.monotonic()))
    end_feed = time.time_ns()
    end = (time.monotonic(), proc_usage(proc.pid)[0], time.thread_time(), time.process_time())
    peer_priority(0)
    time.sleep(1.5)  # let the last chunks, commands and diagnostics (1 Hz) arrive
    _, rss = proc_usage(proc.pid)
    proc.stop()
    seconds = end[0] - start[0]
    with bench.lock:
        sets = {s: t for s, t in bench.published.items() if s >= measuring_from}
        to_chunk = [(bench.chunk[s] - t) / 1e6 for s, t in sets.items() if s in bench.chunk]
        to_cmd = [(bench.command[s] - t) / 1e6 for s, t in sets.items() if s in bench.command]
        # Per set, from the node's own stamps: where the time between the publication of
        # the set's last image and its chunk went.
        staged = [(t, bench.stages[s]) for s, t in sets.items() if s in bench.stages]
        cmds = [t for t in bench.command_times if measuring_from <= t <= end_feed]
        counters = dict(bench.counters)
    gaps = np.diff(np.array(cmds)) / 1e6
    ms = lambda f: percentiles([f(t, *st) / 1e6 for t, st in staged])  # noqa: E731
    return {
        "point": point.__dict__,
        "sets_published": len(sets),
        "sets_inferred": len(to_chunk),
        "sets_dropped": len(sets) - len(to_chunk),
        "input_to_chunk_ms": percentiles(to_chunk),
        "input_to_command_ms": percentiles(to_cmd),
        "stages_ms": {
            "input_to_chunk_in_node": ms(lambda t, rec, que, sta, fin: fin - t),
            "transport": ms(lambda t, rec, que, sta, fin: rec - t),
            "decode_and_sync": ms(lambda t, rec, que, sta, fin: que - rec),
            "handoff": ms(lambda t, rec, que, sta, fin: sta - que),
            "forward": ms(lambda t, rec, que, sta, fin: fin - sta),
            "outside_forward": ms(lambda t, rec, que, sta, fin: sta - t),
        },
        "command_rate_hz": len(cmds) / ((end_feed - measuring_from) / 1e9),
        "jitter_ms": percentiles(list(np.abs(gaps - 20.0))) if len(gaps) else percentiles([]),
        # The node's own count of what it dropped and why, over the whole run (warm-up
        # and start-up included).
        "drops_by_reason": {k: int(v) for k, v in counters.items()
                            if k.startswith(("dropped/", "rejected/")) and int(v) > 0},
        "superseded": int(counters.get("observations_superseded", 0)),
        "measured_seconds": seconds,
        "cpu_seconds": end[1] - start[1],
        "cpu_ms_per_set": (end[1] - start[1]) * 1e3 / max(len(sets), 1),
        "cpu_percent_of_core": (end[1] - start[1]) / seconds * 100,
        "peer_publisher_cpu_percent": (end[2] - start[2]) / seconds * 100,
        "peer_process_cpu_percent": (end[3] - start[3]) / seconds * 100,
        "peak_rss_mib": rss,
    }


def merge(runs):
    out = {k: sum(r[k] for r in runs) for k in ("sets_published", "sets_inferred", "sets_dropped", "superseded")}
    out["drops_by_reason"] = {}
    for r in runs:
        for reason, n in r["drops_by_reason"].items():
            out["drops_by_reason"][reason] = out["drops_by_reason"].get(reason, 0) + n
    for k in ("cpu_seconds", "cpu_ms_per_set", "cpu_percent_of_core", "peer_publisher_cpu_percent",
              "peer_process_cpu_percent", "peak_rss_mib", "command_rate_hz"):
        out[k] = float(np.mean([r[k] for r in runs]))

    def mean_of(values):
        values = [v for v in values if v["n"]]
        if not values:
            return percentiles([])
        out = {q: float(np.mean([v[q] for v in values])) for q in ("p50", "p99")}
        out["max"] = float(max(v["max"] for v in values))
        out["n"] = sum(v["n"] for v in values)
        return out

    for k in ("input_to_chunk_ms", "input_to_command_ms", "jitter_ms"):
        out[k] = mean_of([r[k] for r in runs])
    out["stages_ms"] = {k: mean_of([r["stages_ms"][k] for r in runs]) for k in runs[0]["stages_ms"]}
    return out


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return "" if not a or b is None else f"{b / a:.1f}x"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return f"{os.cpu_count()} x {cpu}, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def header(args_line: str) -> str:
    return (f"date {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; machine: {machine()}; "
            f"load average before: {load_average()}\ncommand: {args_line}")


def print_comparison(r: dict, p: dict, floor: dict, paced: dict) -> None:
    rows = [
        ("time outside the forward pass p50 (ms)", r["stages_ms"]["outside_forward"]["p50"], p["stages_ms"]["outside_forward"]["p50"]),
        ("time outside the forward pass p99 (ms)", r["stages_ms"]["outside_forward"]["p99"], p["stages_ms"]["outside_forward"]["p99"]),
        ("CPU time per camera set (ms)", r["cpu_ms_per_set"], p["cpu_ms_per_set"]),
        ("CPU, % of one core", r["cpu_percent_of_core"], p["cpu_percent_of_core"]),
        ("peak memory (MiB)", r["peak_rss_mib"], p["peak_rss_mib"]),
        ("control jitter p50 (ms)", r["jitter_ms"]["p50"], p["jitter_ms"]["p50"]),
        ("control jitter p99 (ms)", r["jitter_ms"]["p99"], p["jitter_ms"]["p99"]),
        ("input to chunk p50 (ms)", r["input_to_chunk_ms"]["p50"], p["input_to_chunk_ms"]["p50"]),
        ("input to chunk p99 (ms)", r["input_to_chunk_ms"]["p99"], p["input_to_chunk_ms"]["p99"]),
        ("input to command p50 (ms), bounded by the 20 ms control tick", r["input_to_command_ms"]["p50"], p["input_to_command_ms"]["p50"]),
        ("input to command p99 (ms), bounded by the 20 ms control tick", r["input_to_command_ms"]["p99"], p["input_to_command_ms"]["p99"]),
    ]
    print("\n| | Rust node | Python baseline | Python / Rust |\n|---|---|---|---|")
    for label, a, b in rows:
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} |")
    print(f"| sets dropped (published, never inferred) | {r['sets_dropped']} of {r['sets_published']} | "
          f"{p['sets_dropped']} of {p['sets_published']} | |")
    print(f"| sets superseded by a newer one (whole runs) | {r['superseded']} | {p['superseded']} | |")
    print(f"| commands per second | {r['command_rate_hz']:.1f} | {p['command_rate_hz']:.1f} | |")
    print(f"| peer publishing the inputs, CPU % of one core (publishing thread / whole process) | "
          f"{r['peer_publisher_cpu_percent']:.0f} / {r['peer_process_cpu_percent']:.0f} | "
          f"{p['peer_publisher_cpu_percent']:.0f} / {p['peer_process_cpu_percent']:.0f} | |")
    print("\nWhere the time went, per set, on the nodes' own stamps (p50 / p99 ms):\n")
    print("| stage | Rust node | Python baseline |\n|---|---|---|")
    for label, key in (("last image published to chunk ready", "input_to_chunk_in_node"),
                       ("  transport: published to taken by the node", "transport"),
                       ("  decode and synchronize", "decode_and_sync"),
                       ("  hand-off to the inference thread", "handoff"),
                       ("  forward pass and chunk handed to control", "forward"),
                       ("everything but the forward pass", "outside_forward")):
        a, b = r["stages_ms"][key], p["stages_ms"][key]
        print(f"| {label} | {fmt(a['p50'])} / {fmt(a['p99'])} | {fmt(b['p50'])} / {fmt(b['p99'])} |")
    print("\nDropped by the nodes, by reason, over whole runs (start-up and warm-up included; their own counts):\n")
    for name, res in (("Rust node", r), ("Python baseline", p)):
        reasons = res["drops_by_reason"] or {"(none)": 0}
        print(f"- {name}: " + "; ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    chunk_p99 = r["stages_ms"]["input_to_chunk_in_node"]["p99"]
    print(f"\nforward pass alone in this process: back to back p50 {floor['p50']:.2f} / p99 {floor['p99']:.2f} ms, "
          f"once every 33 ms p50 {paced['p50']:.2f} / p99 {paced['p99']:.2f} ms")
    print(f"Rust node's overhead at p99: outside the forward pass {r['stages_ms']['outside_forward']['p99']:.2f} ms; "
          f"chunk ready p99 - forward p99 back to back {chunk_p99 - floor['p99']:.2f} ms, "
          f"- forward p99 at 30 Hz {chunk_p99 - paced['p99']:.2f} ms (target < 1 ms)")


def sweep_points(args) -> list[Point]:
    pts = []
    for c in args.sweep_cameras:
        for size in args.sweep_sizes:
            w, h = (int(x) for x in size.split("x"))
            for rate in args.sweep_rates:
                for jhz in args.sweep_joint_hz:
                    pts.append(Point(c, w, h, rate, jhz))
    return sorted(pts, key=lambda q: (q.load(), q.joint_hz))


def print_sweep(rows: list[dict], names: list[str]) -> None:
    print("\nPer point, each node once (camera sets the peer sent per second; sets dropped of published; p99 "
          "outside the forward pass; CPU % of one core and per set; the peer's CPU % of one core, publishing "
          "thread / whole process):\n")
    head = "| cameras | image | camera Hz | joint Hz |"
    sep = "|---|---|---|---|"
    for n in names:
        head += f" {LABELS[n]}: sets/s sent | dropped | outside forward p99 (ms) | CPU % core (ms/set) | peer CPU % |"
        sep += "---|---|---|---|---|"
    print(head + "\n" + sep)
    for row in rows:
        q = row["point"]
        line = f"| {q['cameras']} | {q['width']}x{q['height']} | {q['rate_hz']:g} | {q['joint_hz']:g} |"
        for n in names:
            r = row[n]
            if "error" in r:
                line += f" did not run: {r['error']} | | | | |"
                continue
            line += (f" {r['sets_published'] / r['measured_seconds']:.0f} | {r['sets_dropped']} of {r['sets_published']} | "
                     f"{fmt(r['stages_ms']['outside_forward']['p99'])} | "
                     f"{r['cpu_percent_of_core']:.0f} ({r['cpu_ms_per_set']:.1f}) | "
                     f"{r['peer_publisher_cpu_percent']:.0f} / {r['peer_process_cpu_percent']:.0f} |")
        print(line)
    print(f"\nWhere each node breaks (points in order of camera bytes per second; overloaded: p99 outside "
          f"the forward pass above {OVERHEAD_LIMIT_MS:g} ms):\n")
    for n in names:
        def first(cond):
            hit = [row for row in rows if "error" not in row[n] and cond(row[n])]
            return Point(**hit[0]["point"]).label() if hit else "none of the points"
        drops = first(lambda r: r["sets_dropped"] > 0)
        over = first(lambda r: (r["stages_ms"]["outside_forward"]["p99"] or 0) > OVERHEAD_LIMIT_MS)
        failed = [Point(**row["point"]).label() for row in rows if "error" in row[n]]
        print(f"- {LABELS[n]}: first drops sets at {drops}; first above {OVERHEAD_LIMIT_MS:g} ms at {over}"
              + (f"; did not run at {', '.join(failed)}" if failed else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300, help="camera sets measured per run")
    ap.add_argument("--warmup", type=int, default=60, help="camera sets after the first chunk, not measured")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each implementation, alternating")
    ap.add_argument("--json", type=Path, help="results file (default target/bench-e2e.json or bench-sweep.json)")
    ap.add_argument("--only", choices=sorted(NODES), help="run one implementation (no ratios)")
    ap.add_argument("-p", "--param", action="append", default=[],
                    help="name:=value for both nodes, e.g. torch_threads:=1")
    ap.add_argument("--peer-priority", type=int, default=PEER_PRIORITY,
                    help="SCHED_FIFO priority of the publishing peer, 0 for normal")
    ap.add_argument("--sweep", action="store_true", help="the load sweep instead of the comparison")
    csv = lambda f: lambda s: [f(x) for x in s.split(",")]  # noqa: E731
    ap.add_argument("--sweep-cameras", type=csv(int), default=[3, 6])
    ap.add_argument("--sweep-sizes", type=csv(str), default=["640x480", "1280x720"])
    ap.add_argument("--sweep-rates", type=csv(float), default=[30.0, 60.0])
    ap.add_argument("--sweep-joint-hz", type=csv(float), default=[200.0, 500.0])
    ap.add_argument("--sweep-seconds", type=float, default=6.0, help="measured seconds per node and point")
    args = ap.parse_args()
    extra = [x for p in args.param for x in ("-p", p)]
    (ROOT / "target").mkdir(exist_ok=True)
    print(header("python benches/e2e.py " + " ".join(sys.argv[1:])))

    # The floor runs with the nodes' libtorch thread count (the parameters file's, or -p's).
    threads = yaml.safe_load(PARAMS.read_text())["/**"]["ros__parameters"].get("torch_threads", 0)
    for p in args.param:
        name, _, value = p.partition(":=")
        threads = int(value) if name == "torch_threads" else threads
    if threads > 0:
        torch.set_num_threads(threads)
    print(f"libtorch threads: {torch.get_num_threads()}")
    rclpy.init()
    node = rclpy.create_node("vla_bench_peer")
    bench = Bench(node)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    names = [args.only] if args.only else ["rust", "python"]
    started = time.monotonic()
    try:
        if args.sweep:
            return sweep(args, bench, names, extra, started)
        return compare(args, bench, names, extra, started)
    finally:
        ex.shutdown()
        spinner.join(timeout=5)
        rclpy.try_shutdown()


def compare(args, bench, names, extra, started) -> int:
    floor = floor_forward_ms()
    # Once per camera set, caches and branch predictors are cold again: the same forward
    # pass takes longer than in a tight loop, whichever node runs it.
    paced = floor_forward_ms(runs=100, gap_s=1 / 30)
    results = {name: [] for name in names}
    point = Point()
    for r in range(args.rounds):
        for name in names:
            res = run_once(name, bench, point, args.frames, args.warmup, extra, args.peer_priority)
            results[name].append(res)
            print(f"round {r + 1} {name:6s}: outside forward p99 {fmt(res['stages_ms']['outside_forward']['p99'])} ms, "
                  f"chunk p99 {fmt(res['input_to_chunk_ms']['p99'])} ms, dropped {res['sets_dropped']}/"
                  f"{res['sets_published']}, cpu {res['cpu_ms_per_set']:.2f} ms/set")
    summary = {k: merge(v) for k, v in results.items()}
    summary.update(floor_forward_ms=floor, forward_at_30hz_ms=paced, runs=results, machine=machine())
    out = args.json or ROOT / "target" / "bench-e2e.json"
    out.write_text(json.dumps(summary, indent=2))
    if args.only:
        print(json.dumps(summary[args.only], indent=2))
    else:
        print_comparison(summary["rust"], summary["python"], floor, paced)
    print(f"\nload average after: {load_average()}; {time.monotonic() - started:.0f} s; results in {out}")
    return 0


def sweep(args, bench, names, extra, started) -> int:
    rows = []
    points = sweep_points(args)
    for k, q in enumerate(points):
        row = {"point": q.__dict__}
        frames = int(args.sweep_seconds * q.rate_hz)
        for name in names:
            for attempt in (1, 2):
                try:
                    res = run_once(name, bench, q, frames, int(q.rate_hz), extra, args.peer_priority)
                    break
                except RuntimeError as e:
                    # Seen on a loaded host: Fast DDS failing to open a shared-memory port
                    # at start-up ("open_and_lock_file failed"), and the node receiving
                    # nothing. A second start has worked; both attempts are reported.
                    res = {"error": str(e), "attempts": attempt}
                    print(f"[{k + 1}/{len(points)}] {q.label()}: {name} attempt {attempt}: {e}", flush=True)
            row[name] = res
            if "error" not in res:
                print(f"[{k + 1}/{len(points)}] {q.label()}: {name} dropped {res['sets_dropped']}/{res['sets_published']}, "
                      f"outside forward p99 {fmt(res['stages_ms']['outside_forward']['p99'])} ms, "
                      f"cpu {res['cpu_percent_of_core']:.0f}% of a core", flush=True)
            else:
                print(f"[{k + 1}/{len(points)}] {q.label()}: {name} {res['error']}", flush=True)
        rows.append(row)
    out = args.json or ROOT / "target" / "bench-sweep.json"
    out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print_sweep(rows, names)
    print(f"\nload average after: {load_average()}; {time.monotonic() - started:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
