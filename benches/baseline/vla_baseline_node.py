"""The Python baseline of `make bench-e2e`: the vla_controller node written as a strong
Python robotics engineer would write it with rclpy and PyTorch, to be the best
competitor the Rust node can be measured against. It reads the same parameters file,
runs the same TorchScript policy through the same libtorch (PyTorch's), and publishes the
same topics (commands, ~/predicted_joint_states, ~/timing/chunk, ~/timing/command,
/diagnostics with every drop by reason, ~/attention/<camera> overlays, ~/attention/
language, tokens and grids), so benches/e2e.py compares like with like.

The pipeline is pipeline.py: the Rust node's algorithms ported one for one (message_filters'
ApproximateTime with the inter-message bound, nearest joint state, character tokenizer,
ACT temporal ensembling on the control tick, safety filter, holds), so that the baseline
commands what the node commands (tests/replay/test_baseline_parity.py holds the two
replays to 1e-3). What makes it fast, each measured in BENCHMARKS.md:

- threads as the Rust node's: receiving (cameras and joint states), inference, control
  and explanations each on their own thread; the receive, inference and control threads
  under SCHED_FIFO at `thread_priority` - 1, - 2 and `thread_priority` (and Fast DDS's
  reception threads at the receive priority), where permitted, as the node does;
- one SingleThreadedExecutor, spun by the receive thread: the fast rclpy executor here
  (a MultiThreadedExecutor of two threads dropped 67 and 290 of 301 sets in
  BENCHMARKS.md, this build's EventsExecutor fires no timers, and a second executor for
  the cameras and joint states alone made the tail longer, not shorter);
- camera images taken serialized (`raw=True`) and read in place from the CDR bytes: no
  message object, no copy of the pixels before decoding;
- explanations drawn with whole-image numpy passes into buffers kept between frames
  (separable upsampling, one `np.take` table lookup per pixel, 16-bit blending);
- decoding by exact integer area averaging in a few whole-image numpy passes (rows
  summed in uint16 by strided adds, then columns), 0.4-0.5 ms for a 640x480 image,
  where the shipped `reshape(...).sum(axis=(1, 3))` into uint32 took 6-24 ms and a
  float32 matrix product for the columns 1.4 ms (benches/baseline/micro.py);
- the control loop as a thread sleeping to absolute deadlines, not an executor timer;
- newest-set-wins hand-off to the inference thread (a condition variable, one slot);
- a GIL switch interval of 0.5 ms (`sys.setswitchinterval`, 5 ms by default), so a
  woken receive, inference or control thread gets the interpreter within 0.5 ms;
- PyTorch: `torch.inference_mode`, `torch_threads` intra-op threads and one inter-op
  thread, input tensors made without copies, and warm-up forward passes before the
  first camera set (the profiling executor optimizes the graph on its first calls);
- `gc.freeze()` after start-up, so the collector never walks the torch and rclpy objects
  made at start.

Explanations are the policy's own attention maps (the Rust node's
`explanation_method: policy_attention`, which the benchmark uses); occlusion is not
implemented here. `vla_baseline_node.py replay BAG -o OUT` runs a recording through
the same pipeline as fast as it goes (replay.py), like `vla_controller replay`.
`VLA_BASELINE_WITHOUT=raw_images,...` leaves techniques out, to measure each:
`raw_images`, `switch_interval`, `gc_freeze`, `warmup`, `single_threaded_executor`
(`-p thread_priority:=0` leaves out the real-time priorities).

    python benches/baseline/vla_baseline_node.py --ros-args --params-file config/controller.yaml
"""

from __future__ import annotations

import gc
import json
import os
import struct
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

# Run as a script: its folder is on sys.path, and with it pipeline.py.
from pipeline import (  # noqa: E402
    INSTRUCTION_TOPIC, JOINT_STATES_TOPIC, ImageDecoder, ImageRejected, Pipeline, Stats, camera_topic,
)

#: The Rust node's parameters and defaults (src/config.rs), read from the same file.
PARAMS = {
    "policy_path": "policy/demo_policy.pt", "device": "cpu", "torch_threads": 0, "thread_priority": 50,
    "camera_names": ["main", "side", "top"], "image_width": 640, "image_height": 480,
    "joint_names": ["shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch", "wrist_roll", "gripper"],
    "control_rate_hz": 50.0, "sync_queue_size": 10, "sync_max_interval_s": 0.02, "sync_age_penalty": 0.1,
    "sync_inter_message_lower_bound_s": 0.015, "joint_state_tolerance_s": 0.05, "camera_timeout_s": 0.5,
    "joint_state_timeout_s": 0.25, "smoothing": "temporal_ensemble", "ensemble_m": 0.05,
    "exponential_alpha": 0.5, "joint_lower_limits": [0.0], "joint_upper_limits": [0.0],
    "max_step_per_tick": [0.0], "command_type": "float64_multi_array", "diagnostics_rate_hz": 1.0,
    "dry_run": False, "attention_threshold": 0.3, "activation_alpha": 0.4, "explain_rate_hz": 5.0,
    "explanation_method": "occlusion", "occlusion_batch": 16,
}

#: GIL switch interval: how long a thread that wants the interpreter waits at most.
SWITCH_INTERVAL_S = 0.0005
WARMUP_PASSES = 20
#: Techniques to leave out, one at a time, to measure what each brings (BENCHMARKS.md):
#: a comma list of switch_interval, raw_images, gc_freeze, warmup.
WITHOUT = set(filter(None, os.environ.get("VLA_BASELINE_WITHOUT", "").split(",")))


class ConfigError(Exception):
    pass


def load_policy(p: dict):
    """The TorchScript policy and its metadata, checked against the parameters."""
    if p["torch_threads"] > 0:
        torch.set_num_threads(p["torch_threads"])
    torch.set_num_interop_threads(1)
    path = Path(p["policy_path"])
    if not path.is_file():
        raise ConfigError(f"policy {path}: no such file")
    policy = torch.jit.load(str(path), map_location=p["device"])
    policy.eval()
    meta = json.loads(policy.metadata())
    diffs = []
    if meta["camera_names"] != list(p["camera_names"]):
        diffs.append(f"cameras: policy {meta['camera_names']}, parameter camera_names {list(p['camera_names'])}")
    if meta["joint_names"] != list(p["joint_names"]):
        diffs.append(f"joints: policy {meta['joint_names']}, parameter joint_names {list(p['joint_names'])}")
    if abs(meta["control_rate_hz"] - p["control_rate_hz"]) > 1e-9:
        diffs.append(f"control rate: policy {meta['control_rate_hz']} Hz, parameter {p['control_rate_hz']} Hz")
    if diffs:
        raise ConfigError(f"policy {path} does not match the configuration: " + "; ".join(diffs))
    return policy, meta


class PolicyRunner:
    """One forward pass: observation in, actions in joint units, token weights and patch
    maps out. Input tensors wrap the arrays without copies."""

    def __init__(self, policy, meta: dict, device: str):
        self.policy, self.device = policy, torch.device(device)
        n = meta["normalization"]
        self.s_mean, self.s_std = np.array(n["state_mean"]), np.array(n["state_std"])
        self.a_mean, self.a_std = np.array(n["action_mean"]), np.array(n["action_std"])
        self.shape = (1, len(meta["camera_names"]), meta["image_height"], meta["image_width"], 3)
        self._tokens = (None, None)

    def tokens(self, tokens):
        if self._tokens[0] is not tokens:
            self._tokens = (tokens, (torch.from_numpy(tokens.ids)[None].to(self.device),
                                     torch.from_numpy(tokens.mask)[None].to(self.device)))
        return self._tokens[1]

    def __call__(self, images: np.ndarray, state: np.ndarray, tokens):
        state_n = ((state - self.s_mean) / self.s_std).astype(np.float32)[None]
        with torch.inference_mode():
            out = self.policy(torch.from_numpy(images.reshape(self.shape)).to(self.device),
                              torch.from_numpy(state_n).to(self.device), *self.tokens(tokens))
        actions, weights, maps = (t[0].cpu().numpy() for t in out)
        if not np.isfinite(actions).all():
            raise ValueError("policy returned a non-finite action")
        return actions.astype(np.float64) * self.a_std + self.a_mean, weights, maps

    def warm_up(self, tokens, passes: int = WARMUP_PASSES):
        images = np.zeros(self.shape, np.uint8)
        for _ in range(passes):
            self(images, self.s_mean.copy(), tokens)


# --------------------------------------------------------------------------- images

def parse_image_cdr(b: bytes):
    """A serialized sensor_msgs/Image (CDR, little or big endian) read in place: stamp,
    frame_id, width, height, encoding, step and a memoryview of the pixels. Raises
    ValueError on anything that does not deserialize."""
    if len(b) < 4 or b[1] not in (0, 1):
        raise ValueError("not a CDR message")
    e = "<" if b[1] == 1 else ">"
    view, base, off = memoryview(b), 4, 4

    def align(o, n):
        return base + (o - base + n - 1) // n * n

    def u32(o):
        return struct.unpack_from(e + "I", b, o)[0]

    def string(o):
        o = align(o, 4)
        n = u32(o)
        if n == 0 or o + 4 + n > len(b):
            raise ValueError("bad string")
        return bytes(view[o + 4:o + 3 + n]).decode(), o + 4 + n

    sec, nsec = struct.unpack_from(e + "iI", b, off)
    frame_id, off = string(off + 8)
    off = align(off, 4)
    height, width = struct.unpack_from(e + "II", b, off)
    encoding, off = string(off + 8)
    off = align(off + 1, 4)  # is_bigendian
    step = u32(off)
    off = align(off + 4, 4)
    n = u32(off)
    if off + 4 + n > len(b):
        raise ValueError("data beyond the message")
    return sec * 1_000_000_000 + nsec, frame_id, width, height, encoding, step, view[off + 4:off + 4 + n]


class CameraImage:
    """A received image: its fields and pixels (a view into the taken message)."""
    __slots__ = ("stamp", "frame_id", "width", "height", "encoding", "step", "data")

    def __init__(self, stamp, frame_id, width, height, encoding, step, data):
        self.stamp, self.frame_id, self.width, self.height = stamp, frame_id, width, height
        self.encoding, self.step, self.data = encoding, step, data

    def rgb(self, decoder_cache: dict) -> np.ndarray:
        """The image as RGB at full size (no copy for tightly packed rgb8)."""
        if self.encoding == "rgb8" and self.step == self.width * 3:
            return np.frombuffer(self.data, np.uint8).reshape(self.height, self.width, 3)
        key = (self.width, self.height)
        d = decoder_cache.get(key) or decoder_cache.setdefault(key, ImageDecoder(*key, *key))
        return d.decode(self.width, self.height, self.encoding, self.step, self.data)


# --------------------------------------------------------------------- explanations

def colormap_lut(alpha: float, steps: int = 1024) -> tuple[np.ndarray, int]:
    """`a x colour + 128` per step of the node's inferno map (src/explain/render.rs)."""
    stops = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)
    x = np.arange(steps, dtype=np.float32) / (steps - 1) * 4
    i = np.minimum(np.floor(x).astype(int), 3)
    colour = np.floor(stops[i] + (stops[i + 1] - stops[i]) * (x - i)[:, None] + 0.5)
    a = round(min(max(alpha, 0.0), 1.0) * 256)
    return (a * colour + 128).astype(np.int32), 256 - a


def _bilinear_axis(n_out: int, n_in: int):
    """Per output pixel: the two grid cells it lies between and the second's weight,
    sampling at pixel centres (align_corners=False), as the node's Bilinear."""
    s = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(s).astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), (s - i0).astype(np.float32)


class OverlayRenderer:
    """The grid normalized to its maximum, upsampled bilinearly, colour-mapped (1024
    steps) and blended over the camera image in steps of 1/256, as the node draws it
    (src/explain/render.rs): separable upsampling, one table lookup per pixel
    (`np.take`), 16-bit integer blending, buffers kept from one frame to the next."""

    def __init__(self, h: int, w: int, rows: int, cols: int, alpha: float):
        self.x, self.y = _bilinear_axis(w, cols), _bilinear_axis(h, rows)
        lut, keep = colormap_lut(alpha)
        self.lut, self.keep = lut.astype(np.uint16), np.uint16(keep)
        self.up, self.tmp = np.empty((h, w), np.float32), np.empty((h, w), np.float32)
        self.idx = np.empty((h, w), np.uint16)
        self.colours, self.blend = np.empty((h, w, 3), np.uint16), np.empty((h, w, 3), np.uint16)

    def __call__(self, camera: np.ndarray, grid: np.ndarray) -> np.ndarray:
        m = float(grid.max()) if np.isfinite(grid).all() else 0.0
        g = np.nan_to_num(grid / m if m > 0 else grid * 0).astype(np.float32)
        (x0, x1, fx), (y0, y1, fy) = self.x, self.y
        wide = g[:, x0] * (1 - fx) + g[:, x1] * fx
        np.multiply(wide[y0], (1 - fy)[:, None], out=self.up)
        np.multiply(wide[y1], fy[:, None], out=self.tmp)
        self.up += self.tmp
        np.clip(self.up, 0, 1, out=self.up)
        self.up *= 1023
        self.up += 0.5
        np.copyto(self.idx, self.up, casting="unsafe")
        np.take(self.lut, self.idx, axis=0, out=self.colours, mode="clip")
        np.multiply(camera, self.keep, out=self.blend, dtype=np.uint16)
        self.blend += self.colours
        self.blend >>= 8
        return self.blend.astype(np.uint8)


class Glyphs:
    """assets/glyphs.bin (GNU Unifont bitmaps), as the node draws its text."""

    def __init__(self, path: Path):
        raw = path.read_bytes()
        n = struct.unpack_from("<I", raw, 9)[0]
        self.glyphs, self.scaled = {}, {}
        for k in range(n):
            r = raw[13 + 37 * k: 13 + 37 * (k + 1)]
            w = r[4]
            rows = np.frombuffer(r[5:37], ">u2")
            self.glyphs[chr(struct.unpack_from("<I", r, 0)[0])] = (w, ((rows[:, None] >> (15 - np.arange(w))) & 1).astype(bool))

    def width(self, text: str, scale: int) -> int:
        return sum(self.glyphs.get(c, (8 if ord(c) < 0x1100 else 16,))[0] * scale for c in text)

    def draw(self, img: np.ndarray, x: int, y: int, text: str, colour, scale: int) -> None:
        for c in text:
            w, bits = self.glyphs.get(c, (8 if ord(c) < 0x1100 else 16, None))
            if bits is None:
                bits = np.zeros((16, w), bool)
                bits[1, 1:w - 1] = bits[14, 1:w - 1] = bits[1:15, 1] = bits[1:15, w - 2] = True
            big = self.scaled.get((c, scale))
            if big is None:
                big = self.scaled[c, scale] = np.repeat(np.repeat(bits, scale, 0), scale, 1)
            region = img[y:y + big.shape[0], x:x + big.shape[1]]
            region[big[: region.shape[0], : region.shape[1]]] = colour
            x += w * scale


def language_heatmap(glyphs: Glyphs, tokens: list[str], weights: np.ndarray, threshold: float) -> np.ndarray:
    """Each token on a background of its weight's colour (neutral under the threshold),
    the weight printed under it, wrapped at 640 pixels (src/explain/render.rs)."""
    scale, pad, max_w = 2, 4, 640
    w = weights[: len(tokens)]
    m = float(w.max()) if len(w) else 0.0
    rel = w / m if m > 0 else np.zeros_like(w)
    lut, _ = colormap_lut(1.0)
    cells = []
    for t, v in zip(tokens, w):
        shown = "\u00b7" if not t.strip() else t
        number = f"{v:.2f}"
        cells.append((shown, number, max(glyphs.width(shown, scale), glyphs.width(number, 1)) + 2 * pad))
    row_h = 16 * scale + 16 + 3 * pad
    pos, x, y = [], pad, pad
    for _, _, cw in cells:
        if x + cw > max_w - pad and x > pad:
            x, y = pad, y + row_h + pad
        pos.append((x, y))
        x += cw + 1
    img = np.full((y + row_h + pad if cells else row_h + 2 * pad, max_w, 3), 255, np.uint8)
    for i, ((shown, number, cw), (x, y)) in enumerate(zip(cells, pos)):
        bg = (lut[int(round(float(rel[i]) * 1023))] // 256 if rel[i] >= threshold and rel[i] > 0
              else np.array([205, 205, 205]))
        img[y:y + row_h, x:x + cw] = bg
        ink = (0, 0, 0) if 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] > 110 else (255, 255, 255)
        glyphs.draw(img, x + (cw - glyphs.width(shown, scale)) // 2, y + pad, shown, ink, scale)
        glyphs.draw(img, x + (cw - glyphs.width(number, 1)) // 2, y + 2 * pad + 16 * scale, number, ink, 1)
    return img


# ------------------------------------------------------------------------ the node

class LatestSlot:
    """One place, newest wins: `put` returns whether it replaced a waiting value."""

    def __init__(self):
        self.cond = threading.Condition()
        self.value = None
        self.closed = False

    def put(self, v) -> bool:
        with self.cond:
            replaced = self.value is not None
            self.value = v
            self.cond.notify()
        return replaced

    def take(self):
        with self.cond:
            while self.value is None and not self.closed:
                self.cond.wait()
            v, self.value = self.value, None
            return v

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def set_fifo(priority: int, tid: int = 0, log=None) -> bool:
    """SCHED_FIFO for a thread of this process (0: the calling one), as the node does;
    without permission it says so once and the thread stays as it is."""
    if priority <= 0:
        return False
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except OSError as e:
        if log is not None and not getattr(set_fifo, "warned", False):
            set_fifo.warned = True
            log(f"thread_priority not applied, running at normal priority ({e}); grant rtprio or set "
                "thread_priority to 0")
        return False


def name_thread(name: str) -> None:
    """The calling thread's name as the system shows it (/proc, top -H), as the node's."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def ros_api() -> SimpleNamespace:
    """rclpy, the message types and the stamp conversions the node uses, imported when
    the node runs, not when the bag replay imports this file."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from builtin_interfaces.msg import Duration, Time
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, Header, String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    from vla_controller_msgs.msg import ActivationGrid, InferenceTiming, TokenAttention

    def to_time(t: int) -> Time:
        return Time(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000)

    def to_duration(t: int) -> Duration:
        return Duration(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000)

    return SimpleNamespace(**locals())


class BaselineNode:
    """The running node: the state its callbacks and threads share (the pipeline under
    its lock, the two hand-off slots, the publishers), one method per callback and per
    thread. The thread loops bind what they use to locals before they start."""

    def __init__(self, ros: SimpleNamespace, node, p: dict, meta: dict, runner: PolicyRunner, pipe: Pipeline,
                 stats: Stats):
        self.ros, self.node, self.log, self.p, self.meta = ros, node, node.get_logger(), p, meta
        self.runner, self.pipe, self.stats = runner, pipe, stats
        self.use_sim_time = node.get_parameter("use_sim_time").value
        self.lock = threading.Lock()  # the pipeline's, as the node's Mutex<Core>
        self.decoder = ImageDecoder(p["image_width"], p["image_height"], meta["image_width"], meta["image_height"])
        self.slot, self.explain_slot = LatestSlot(), LatestSlot()
        self.running = threading.Event()
        self.running.set()
        prio = self.prio = p["thread_priority"]
        self.receive_prio, self.inference_prio = (max(prio - 1, 1), max(prio - 2, 1)) if prio > 0 else (0, 0)
        self.raw_images = "raw_images" not in WITHOUT
        # The instruction: latched and volatile subscriptions, one copy counted (as the node).
        self.last_instruction = None
        self.subscribe()
        self.advertise()
        node.create_timer(1.0 / p["diagnostics_rate_hz"], self.publish_diagnostics)
        self.glyphs = Glyphs(Path(__file__).resolve().parents[2] / "assets" / "glyphs.bin")
        self.rgb_cache: dict = {}
        self.renderers: dict = {}

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds if self.use_sim_time else time.time_ns()

    # ------------------------------------------------------------------ receiving

    def subscribe(self) -> None:
        r, node, p = self.ros, self.node, self.p
        QoSProfile, ReliabilityPolicy = r.QoSProfile, r.ReliabilityPolicy
        for i, name in enumerate(p["camera_names"]):
            topic = camera_topic(name)
            # A plain closure: rclpy's per-call coroutine check costs twice as much on a
            # functools.partial.
            node.create_subscription(r.Image, topic, lambda m, i=i, topic=topic: self.on_camera(i, topic, m),
                                     r.qos_profile_sensor_data, raw=self.raw_images)
        node.create_subscription(r.JointState, JOINT_STATES_TOPIC, self.on_joints, QoSProfile(
            depth=20, reliability=ReliabilityPolicy.BEST_EFFORT))
        node.create_subscription(r.String, INSTRUCTION_TOPIC, lambda m: self.on_instruction(True, m), QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=r.DurabilityPolicy.TRANSIENT_LOCAL))
        node.create_subscription(r.String, INSTRUCTION_TOPIC, lambda m: self.on_instruction(False, m), QoSProfile(depth=10))

    def on_camera(self, i: int, topic: str, raw) -> None:
        """Camera `i`'s image (serialized, with `raw_images`): read, decoded, matched, and
        each set it completes handed to the inference thread."""
        received, now = time.time_ns(), self.now_ns()
        stats = self.stats
        try:
            if self.raw_images:
                img = CameraImage(*parse_image_cdr(raw))
            else:
                img = CameraImage(ns(raw.header.stamp), raw.header.frame_id, raw.width, raw.height, raw.encoding,
                                  raw.step, raw.data)
        except (ValueError, struct.error, UnicodeDecodeError):
            with stats.lock:
                stats.count(stats.received, topic)
                stats.count(stats.rejected, (topic, "message does not deserialize"))
            return
        try:
            decoded = self.decoder.decode(img.width, img.height, img.encoding, img.step, img.data)
        except ImageRejected as e:
            decoded = e
        with self.lock:
            observations = self.pipe.on_image(i, img.stamp, now, decoded, img)
        slot = self.slot
        for obs in observations:
            if slot.put((obs, received, time.time_ns())):
                with stats.lock:
                    stats.observations_superseded += 1

    def on_joints(self, msg) -> None:
        now = self.now_ns()
        with self.lock:
            self.pipe.on_joint_state(ns(msg.header.stamp), now, msg.name, msg.position)

    def on_instruction(self, latched: bool, msg) -> None:
        t = time.monotonic()
        prev = self.last_instruction
        if prev and prev[0] == msg.data and prev[1] != latched and t - prev[2] < 0.5:
            self.last_instruction = None
            return
        self.last_instruction = (msg.data, latched, t)
        with self.lock:
            self.pipe.on_instruction(msg.data)

    # ----------------------------------------------------------------- publishing

    def advertise(self) -> None:
        r, node, p = self.ros, self.node, self.p
        QoSProfile, Image = r.QoSProfile, r.Image
        command_qos = QoSProfile(depth=10)
        self.trajectory = p["command_type"] == "joint_trajectory"
        self.cmd_pub = node.create_publisher(r.JointTrajectory if self.trajectory else r.Float64MultiArray,
                                             "joint_commands", command_qos)
        self.predicted_pub = node.create_publisher(r.JointState, "~/predicted_joint_states", command_qos)
        self.chunk_timing = node.create_publisher(r.InferenceTiming, "~/timing/chunk", QoSProfile(depth=100))
        self.command_timing = node.create_publisher(r.Header, "~/timing/command", QoSProfile(depth=100))
        self.diag_pub = node.create_publisher(r.DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        explain_qos = QoSProfile(depth=2)
        self.overlay_pubs = [node.create_publisher(Image, f"~/attention/{c}", explain_qos) for c in p["camera_names"]]
        self.language_pub = node.create_publisher(Image, "~/attention/language", explain_qos)
        self.tokens_pub = node.create_publisher(r.TokenAttention, "~/attention/tokens", explain_qos)
        self.grids_pub = node.create_publisher(r.ActivationGrid, "~/attention/grids", explain_qos)
        self.diag_name = f"{node.get_fully_qualified_name()}: pipeline"

    def publish_diagnostics(self) -> None:
        r, stats = self.ros, self.stats
        with self.lock:
            state, level = self.pipe.state
        t = self.now_ns()
        msg = r.DiagnosticArray()
        msg.header.stamp = r.to_time(t)
        msg.status = [r.DiagnosticStatus(level=bytes([level]), name=self.diag_name, message=state,
                                         hardware_id="vla_controller",
                                         values=[r.KeyValue(key=k, value=v) for k, v in stats.values(state)])]
        self.diag_pub.publish(msg)

    # -------------------------------------------------------------------- threads

    def infer_loop(self) -> None:
        """The inference thread: the newest set through the policy, its chunk into the
        pipeline, its attention to the explanation thread."""
        set_fifo(self.inference_prio, log=self.log.warning)
        slot, explain_slot, runner, stats, lock, pipe = (self.slot, self.explain_slot, self.runner, self.stats,
                                                         self.lock, self.pipe)
        chunk_timing, InferenceTiming, to_time = self.chunk_timing, self.ros.InferenceTiming, self.ros.to_time
        while (item := slot.take()) is not None:
            obs, received, queued = item
            started = time.time_ns()
            t0 = time.perf_counter()
            try:
                actions, weights, maps = runner(obs.images, obs.state, obs.tokens)
            except (RuntimeError, ValueError) as e:
                with stats.lock:
                    stats.inference_errors += 1
                with lock:
                    pipe.on_policy_error(str(e))
                continue
            ms = (time.perf_counter() - t0) * 1e3
            with lock:
                pipe.on_chunk(obs.stamp, obs.arrival, obs.instruction_seq, actions)
            finished = time.time_ns()
            with stats.lock:
                stats.inferences += 1
                stats.inference_ms_last, stats.inference_ms_max = ms, max(stats.inference_ms_max, ms)
            chunk_timing.publish(InferenceTiming(source=to_time(obs.stamp), received=to_time(received),
                                                 queued=to_time(queued), started=to_time(started),
                                                 finished=to_time(finished)))
            explain_slot.put((obs, weights, maps))

    def control_loop(self) -> None:
        """The control thread: a pipeline tick at every period, its command and target
        published, sleeping to absolute deadlines."""
        set_fifo(self.prio, log=self.log.warning)
        r, p, pipe, lock, log = self.ros, self.p, self.pipe, self.lock, self.log
        running, now_ns, publish_diagnostics = self.running, self.now_ns, self.publish_diagnostics
        trajectory, cmd_pub, command_timing, predicted_pub = (self.trajectory, self.cmd_pub, self.command_timing,
                                                              self.predicted_pub)
        to_time, to_duration, Header, JointState = r.to_time, r.to_duration, r.Header, r.JointState
        JointTrajectory, JointTrajectoryPoint, Float64MultiArray = (r.JointTrajectory, r.JointTrajectoryPoint,
                                                                    r.Float64MultiArray)
        period = pipe.period
        names = list(p["joint_names"])
        deadline = time.monotonic_ns()
        while running.is_set():
            now = now_ns()
            with lock:
                out = pipe.tick(now)
            if out.state_changed:
                # A change of state goes out at once, not only with the periodic status.
                publish_diagnostics()
                if out.level == 0:
                    log.info(out.state)
                else:
                    log.warning(out.state)
            if out.command is not None and not p["dry_run"]:
                if trajectory:
                    cmd = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint(
                        positions=out.command.tolist(), time_from_start=to_duration(period))])
                    cmd.header.stamp = to_time(now)
                else:
                    cmd = Float64MultiArray(data=out.command.tolist())
                cmd_pub.publish(cmd)
                if out.source is not None:
                    h = Header()
                    h.stamp = to_time(out.source)
                    command_timing.publish(h)
            if out.target is not None:
                js = JointState(name=names, position=out.target.tolist())
                js.header.stamp = to_time(now)
                predicted_pub.publish(js)
            # Absolute deadlines; missed ticks are skipped, not bunched (tokio's Skip).
            deadline += period
            late = time.monotonic_ns() - deadline
            if late > 0:
                deadline += (late // period + 1) * period
            time.sleep(max(0, deadline - time.monotonic_ns()) / 1e9)

    def explain_loop(self) -> None:
        """The explanation thread: the newest chunk's attention drawn and published, at
        most `explain_rate_hz` times a second."""
        r, node, p, stats, explain_slot = self.ros, self.node, self.p, self.stats, self.explain_slot
        glyphs, rgb_cache, renderers = self.glyphs, self.rgb_cache, self.renderers
        tokens_pub, language_pub, grids_pub, overlay_pubs = (self.tokens_pub, self.language_pub, self.grids_pub,
                                                             self.overlay_pubs)
        to_time, Header, Image, TokenAttention, ActivationGrid = (r.to_time, r.Header, r.Image, r.TokenAttention,
                                                                  r.ActivationGrid)
        rows, cols = self.meta["patch_grid"]
        while (item := explain_slot.take()) is not None:
            t0 = time.perf_counter()
            obs, weights, maps = item
            alpha, threshold = node.get_parameter("activation_alpha").value, node.get_parameter("attention_threshold").value
            set_header = Header(stamp=to_time(obs.stamp))
            tokens = obs.tokens.pieces
            tw = weights[: len(tokens)].astype(np.float32)
            language = language_heatmap(glyphs, tokens, tw, threshold)
            tokens_pub.publish(TokenAttention(header=set_header, instruction=obs.instruction, tokens=tokens,
                                              method="policy_attention", weights=tw.tolist(),
                                              threshold=float(threshold)))
            language_pub.publish(image_msg(Image, set_header, language))
            for k, (cam, grid, pub) in enumerate(zip(obs.cameras, maps, overlay_pubs)):
                h = Header(stamp=to_time(cam.stamp), frame_id=cam.frame_id)
                grids_pub.publish(ActivationGrid(header=h, camera_name=p["camera_names"][k], method="policy_attention",
                                                 rows=rows, cols=cols, values=grid.reshape(-1).tolist()))
                rgb = cam.rgb(rgb_cache)
                key = (*rgb.shape[:2], alpha)
                render = renderers.get(key) or renderers.setdefault(key, OverlayRenderer(*key[:2], rows, cols, alpha))
                pub.publish(image_msg(Image, h, render(rgb, grid)))
            ms = (time.perf_counter() - t0) * 1e3
            with stats.lock:
                stats.explanations += 1
                stats.explain_ms_last, stats.explain_ms_max = ms, max(stats.explain_ms_max, ms)
            rate = node.get_parameter("explain_rate_hz").value
            time.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - t0)))

    def guarded(self, loop) -> None:
        """A thread's body: `loop`, on a thread named as the node's. After SIGINT rclpy
        shuts the context down under the threads' feet: a publish that fails then is the
        end of the thread, not an error."""
        name_thread(threading.current_thread().name)
        try:
            loop()
        except Exception:
            if self.running.is_set() and self.ros.rclpy.ok():
                raise

    def run(self, executor) -> int:
        """Starts the inference, control and explanation threads, then receives on this
        thread (it spins `executor`) until shutdown; stops the threads."""
        threads = [threading.Thread(target=self.guarded, args=(f,), name=n, daemon=True)
                   for f, n in ((self.infer_loop, "inference"), (self.control_loop, "control"),
                                (self.explain_loop, "explain"))]
        for t in threads:
            t.start()
        receive_prio, p, log = self.receive_prio, self.p, self.log
        if receive_prio:
            # Fast DDS's reception threads, as the node: `dds.shm.<port>`, `dds.udp.<port>`.
            for task in Path("/proc/self/task").iterdir():
                name = (task / "comm").read_text().strip()
                if name.startswith(("dds.shm.", "dds.udp.")) and name.split(".")[-1].isdigit():
                    set_fifo(receive_prio, int(task.name))
        log.info(f"vla_controller baseline running: cameras {list(p['camera_names'])}, "
                 f"{p['control_rate_hz']} Hz, torch threads {torch.get_num_threads()}")
        # This thread receives: it spins the executor, at the receive priority.
        name_thread("receive")
        set_fifo(receive_prio, log=log.warning)
        try:
            executor.spin()
        except (KeyboardInterrupt, self.ros.ExternalShutdownException):
            pass
        finally:
            self.running.clear()
            self.slot.close()
            self.explain_slot.close()
            for t in threads:
                t.join(timeout=2)
            executor.shutdown()
            self.ros.rclpy.try_shutdown()
        return 0


def run_node(argv: list[str]) -> int:
    ros = ros_api()
    ros.rclpy.init(args=argv)
    node = ros.Node("vla_controller")
    log = node.get_logger()
    p = {k: node.declare_parameter(k, v).value for k, v in PARAMS.items()}
    try:
        policy, meta = load_policy(p)
    except (ConfigError, RuntimeError) as e:
        log.fatal(str(e))
        ros.rclpy.try_shutdown()
        return 1
    if p["explanation_method"] != "policy_attention":
        log.warning(f"explanation_method {p['explanation_method']}: the baseline explains with the policy's own maps")
    runner = PolicyRunner(policy, meta, p["device"])
    stats = Stats()
    pipe = Pipeline(p, meta, stats)
    if "warmup" not in WITHOUT:
        runner.warm_up(pipe.tokenizer.encode(""))
    baseline = BaselineNode(ros, node, p, meta, runner, pipe, stats)
    if "switch_interval" not in WITHOUT:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    if "gc_freeze" not in WITHOUT:
        gc.freeze()
    # Left out, the subscriptions and the diagnostics timer run on rclpy's
    # MultiThreadedExecutor (two threads, the node's default mutually exclusive group).
    executor = ros.SingleThreadedExecutor() if "single_threaded_executor" not in WITHOUT \
        else ros.MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    return baseline.run(executor)


def image_msg(Image, header, rgb: np.ndarray):
    h, w = rgb.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "replay":
        from replay import main as replay_main
        return replay_main(sys.argv[2:])
    return run_node(sys.argv)


if __name__ == "__main__":
    sys.exit(main())
