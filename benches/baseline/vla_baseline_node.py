"""The baseline for benches/e2e.py: the vla_controller pipeline as a plain rclpy node with
PyTorch, written the way a competent Python developer would write it, running the same
TorchScript policy with the same parameters file.

- subscriptions as the Rust node's (sensor-data cameras, joint_states, the instruction
  both latched and volatile);
- message_filters' Python ApproximateTimeSynchronizer algorithm (a dict of stamps per
  topic, the product of candidates within `slop`), since message_filters itself is not
  on PyPI;
- numpy conversions (frombuffer, area average by reshape), the policy on a worker
  thread, newest set wins;
- ACT temporal ensembling on the control timer, the same safety filter;
- the same timing topics (~/timing/chunk, ~/timing/command), drop counts by reason on
  /diagnostics, and an overlay per camera from the policy's own attention maps at
  explain_rate_hz.

    python benches/baseline/vla_baseline_node.py --ros-args --params-file config/controller.yaml
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import threading
import time
from collections import deque

import numpy as np
import rclpy
import torch
import torch.nn.functional as F
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, Header, String
from vla_controller_msgs.msg import InferenceTiming

PARAMS = {
    "policy_path": "policy/demo_policy.pt", "camera_names": ["main", "side", "top"], "image_width": 640,
    "image_height": 480, "joint_names": [""], "control_rate_hz": 50.0, "sync_queue_size": 10,
    "sync_max_interval_s": 0.02, "joint_state_tolerance_s": 0.05, "ensemble_m": 0.05,
    "joint_lower_limits": [0.0], "joint_upper_limits": [0.0], "max_step_per_tick": [0.0],
    "explain_rate_hz": 5.0, "activation_alpha": 0.4, "torch_threads": 0,
}


def to_time(t: int) -> Time:
    return Time(sec=t // 10**9, nanosec=t % 10**9)


def ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class ApproximateTimeSynchronizer:
    """message_filters.ApproximateTimeSynchronizer (the Python implementation's algorithm)."""

    def __init__(self, n, queue_size, slop_ns, callback, dropped):
        self.queues = [{} for _ in range(n)]
        self.queue_size, self.slop, self.callback, self.dropped = queue_size, slop_ns, callback, dropped
        self.lock = threading.Lock()

    def add(self, i, stamp, msg, received):
        with self.lock:
            q = self.queues[i]
            q[stamp] = msg
            while len(q) > self.queue_size:
                del q[min(q)]
                self.dropped("sync: queue full")
            others = [self.queues[j] for j in range(len(self.queues)) if j != i]
            candidates = [[s for s in o if abs(s - stamp) <= self.slop] for o in others]
            if not all(candidates):
                return
            for combo in itertools.product(*candidates):
                stamps = list(combo) + [stamp]
                if max(stamps) - min(stamps) <= self.slop:
                    picked = list(combo)
                    picked.insert(i, stamp)
                    msgs = [self.queues[j][s] for j, s in enumerate(picked)]
                    for j, s in enumerate(picked):
                        del self.queues[j][s]
                    break
            else:
                return
        self.callback(msgs, received)


class TemporalEnsembler:
    """ACT temporal ensembling per tick: weighted sums of every chunk's action for a tick."""

    def __init__(self, m):
        self.m, self.slots = m, {}

    def add(self, first_tick, actions, current_tick):
        for k, a in enumerate(actions):
            t = first_tick + k
            if t < current_tick:
                continue
            s, w, n = self.slots.get(t, (np.zeros_like(a), 0.0, 0))
            wk = math.exp(-self.m * n)
            self.slots[t] = (s + wk * a, w + wk, n + 1)

    def action(self, tick):
        for t in [t for t in self.slots if t < tick]:
            del self.slots[t]
        v = self.slots.pop(tick, None)
        return None if v is None else v[0] / v[1]


def colormap_lut():
    stops = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)
    x = np.linspace(0, 4, 1024)
    i = np.minimum(x.astype(int), 3)
    f = (x - i)[:, None]
    return stops[i] + (stops[i + 1] - stops[i]) * f


class BaselineNode(Node):
    def __init__(self):
        super().__init__("vla_controller")
        p = {k: self.declare_parameter(k, v).value for k, v in PARAMS.items()}
        self.p = p
        if p["torch_threads"]:
            torch.set_num_threads(p["torch_threads"])
        self.policy = torch.jit.load(p["policy_path"])
        self.policy.eval()
        self.meta = json.loads(self.policy.metadata())
        tok = self.meta["tokenizer"]
        self.vocab = {c: i + 2 for i, c in enumerate(tok["vocab"])}
        self.max_len = tok["max_length"]
        n = self.meta["normalization"]
        self.s_mean, self.s_std = np.array(n["state_mean"]), np.array(n["state_std"])
        self.a_mean, self.a_std = np.array(n["action_mean"]), np.array(n["action_std"])
        self.cams = p["camera_names"]
        self.period_ns = int(1e9 / p["control_rate_hz"])
        self.lo, self.hi = np.array(p["joint_lower_limits"]), np.array(p["joint_upper_limits"])
        self.step = np.array(p["max_step_per_tick"])
        self.joints = deque(maxlen=400)
        self.joints_lock = threading.Lock()
        self.tokens = None
        self.latest_set = None
        self.set_ready = threading.Condition()
        self.ensembler = TemporalEnsembler(p["ensemble_m"])
        self.ens_lock = threading.Lock()
        self.tick_base = None
        self.last_cmd = None
        self.newest = None
        self.to_explain = None
        self.lut = colormap_lut()
        self.drops = {}  # reason -> count, published on /diagnostics as the node does
        self.drops_lock = threading.Lock()
        self.sync = ApproximateTimeSynchronizer(len(self.cams), p["sync_queue_size"],
                                                int(p["sync_max_interval_s"] * 1e9), self.on_set, self.dropped)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        subs = ReentrantCallbackGroup()
        for i, c in enumerate(self.cams):
            self.create_subscription(Image, f"camera/{c}/image_raw",
                                     lambda m, i=i: self.sync.add(i, ns(m.header.stamp), m, time.time_ns()),
                                     qos_profile_sensor_data, callback_group=subs)
        self.create_subscription(JointState, "joint_states", self.on_joints, qos_profile_sensor_data,
                                 callback_group=subs)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for qos in (latched, QoSProfile(depth=10)):
            self.create_subscription(String, "instruction", self.on_instruction, qos, callback_group=subs)
        self.cmd_pub = self.create_publisher(Float64MultiArray, "joint_commands", 10)
        self.chunk_timing = self.create_publisher(InferenceTiming, "~/timing/chunk", 100)
        self.command_timing = self.create_publisher(Header, "~/timing/command", 100)
        self.overlay_pubs = [self.create_publisher(Image, f"~/attention/{c}", 2) for c in self.cams]
        self.create_timer(1.0 / p["control_rate_hz"], self.on_tick, callback_group=MutuallyExclusiveCallbackGroup())
        threading.Thread(target=self.infer_loop, daemon=True).start()
        threading.Thread(target=self.explain_loop, daemon=True).start()

    def dropped(self, reason):
        with self.drops_lock:
            self.drops[reason] = self.drops.get(reason, 0) + 1

    def publish_diagnostics(self):
        with self.drops_lock:
            values = [KeyValue(key=f"dropped/{r}", value=str(n)) for r, n in sorted(self.drops.items())]
        name = f"{self.get_fully_qualified_name()}: baseline"
        self.diag_pub.publish(DiagnosticArray(status=[DiagnosticStatus(name=name, values=values)]))

    def on_joints(self, msg):
        idx = {n: i for i, n in enumerate(msg.name)}
        try:
            q = np.array([msg.position[idx[n]] for n in self.p["joint_names"]])
        except (KeyError, IndexError):
            return
        with self.joints_lock:
            self.joints.append((ns(msg.header.stamp), q))

    def on_instruction(self, msg):
        text = msg.data.strip()
        ids = np.zeros(self.max_len, np.int64)
        mask = np.zeros(self.max_len, bool)
        toks = [self.vocab.get(c.lower() if "A" <= c <= "Z" else c, 1) for c in text][: self.max_len]
        ids[: len(toks)], mask[: len(toks)] = toks, True
        self.tokens = (torch.from_numpy(ids)[None], torch.from_numpy(mask)[None])

    def on_set(self, msgs, received):
        now = self.get_clock().now().nanoseconds
        stamp = max(ns(m.header.stamp) for m in msgs)
        with self.joints_lock:
            if self.tokens is None or not self.joints:
                self.dropped("no instruction or joint state yet")
                return
            js = min(self.joints, key=lambda j: abs(j[0] - stamp))
        if abs(js[0] - stamp) > self.p["joint_state_tolerance_s"] * 1e9:
            self.dropped("no joint state within joint_state_tolerance_s")
            return
        imgs = []
        f = self.p["image_width"] // self.meta["image_width"]
        for m in msgs:
            a = np.frombuffer(m.data, np.uint8).reshape(m.height, m.width, -1)
            if m.encoding == "bgr8":
                a = a[:, :, ::-1]
            s = a.reshape(m.height // f, f, m.width // f, f, 3).sum(axis=(1, 3), dtype=np.uint32)
            imgs.append(((s + f * f // 2) // (f * f)).astype(np.uint8))
        with self.set_ready:
            if self.latest_set is not None:
                self.dropped("superseded by a newer set")
            self.latest_set = (stamp, now, np.stack(imgs)[None], js[1], msgs, received, time.time_ns())
            self.set_ready.notify()

    def infer_loop(self):
        while rclpy.ok():
            with self.set_ready:
                while self.latest_set is None:
                    self.set_ready.wait()
                stamp, arrival, images, q, msgs, received, queued = self.latest_set
                self.latest_set = None
            started = time.time_ns()
            state = torch.from_numpy(((q - self.s_mean) / self.s_std).astype(np.float32))[None]
            with torch.no_grad():
                actions, _, maps = self.policy(torch.from_numpy(images), state, *self.tokens)
            actions = actions[0].numpy() * self.a_std + self.a_mean
            with self.ens_lock:
                if self.tick_base is None:
                    self.tick_base = arrival
                first = round((arrival - self.tick_base) / self.period_ns)
                current = round((self.get_clock().now().nanoseconds - self.tick_base) / self.period_ns)
                self.ensembler.add(first, actions, current)
                self.newest = stamp
            self.chunk_timing.publish(InferenceTiming(source=to_time(stamp), received=to_time(received),
                                                      queued=to_time(queued), started=to_time(started),
                                                      finished=to_time(time.time_ns())))
            self.to_explain = (msgs, maps[0].numpy())

    def on_tick(self):
        now = self.get_clock().now().nanoseconds
        with self.ens_lock:
            if self.tick_base is None:
                return
            a = self.ensembler.action(round((now - self.tick_base) / self.period_ns))
            source = self.newest
        if a is None or not np.all(np.isfinite(a)):
            if self.last_cmd is not None:
                self.cmd_pub.publish(Float64MultiArray(data=self.last_cmd.tolist()))
            return
        with self.joints_lock:
            measured = self.joints[-1][1] if self.joints else a
        prev = self.last_cmd if self.last_cmd is not None else measured
        cmd = np.clip(np.clip(np.clip(a, self.lo, self.hi), prev - self.step, prev + self.step), self.lo, self.hi)
        self.last_cmd = cmd
        self.cmd_pub.publish(Float64MultiArray(data=cmd.tolist()))
        h = Header()
        h.stamp.sec, h.stamp.nanosec = source // 10**9, source % 10**9
        self.command_timing.publish(h)

    def explain_loop(self):
        alpha = self.p["activation_alpha"]
        while rclpy.ok():
            t0 = time.monotonic()
            job, self.to_explain = self.to_explain, None
            if job is not None:
                msgs, maps = job
                for m, grid, pub in zip(msgs, maps, self.overlay_pubs):
                    cam = np.frombuffer(m.data, np.uint8).reshape(m.height, m.width, 3).astype(np.float32)
                    g = torch.from_numpy(grid / max(grid.max(), 1e-12))[None, None]
                    up = F.interpolate(g, size=(m.height, m.width), mode="bilinear", align_corners=False)[0, 0].numpy()
                    colour = self.lut[np.clip((up * 1023 + 0.5).astype(int), 0, 1023)]
                    out = Image(header=m.header, height=m.height, width=m.width, encoding="rgb8", step=m.width * 3)
                    out.data = ((1 - alpha) * cam + alpha * colour + 0.5).astype(np.uint8).tobytes()
                    pub.publish(out)
            time.sleep(max(0.0, 1.0 / self.p["explain_rate_hz"] - (time.monotonic() - t0)))


def main():
    rclpy.init(args=sys.argv)
    node = BaselineNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
