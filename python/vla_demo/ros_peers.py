"""rclpy peers of the vla_controller node, used by the demo and the integration tests:

- `ScenePublisher`: the three cameras (one synthetic scene, re-stamped every frame with
  jitter) and the instruction (reliable, transient local, like a latched topic);
- `SimArm`: a simulated arm that follows the node's joint commands and publishes
  `joint_states` (names in its own order, with an extra joint, as real drivers do);
- `Recorder`: keeps what the node publishes (commands, diagnostics) with arrival times.

Everything runs in one executor thread (`Peers`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String

from . import scene as sc

LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def image_msg(rgb: np.ndarray, frame_id: str, encoding: str = "rgb8") -> Image:
    if encoding == "bgr8":
        rgb = rgb[:, :, ::-1]
    rgb = np.ascontiguousarray(rgb)
    msg = Image()
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(rgb.shape[1] * 3)
    msg.data = rgb.tobytes()
    return msg


def set_stamp(msg, t_ns: int) -> None:
    msg.header.stamp.sec = int(t_ns // 1_000_000_000)
    msg.header.stamp.nanosec = int(t_ns % 1_000_000_000)


class ScenePublisher:
    """Publishes one scene's three camera images at `rate_hz` and an instruction."""

    def __init__(self, node: Node, scene: sc.Scene, rate_hz: float = 30.0, jitter_s: float = 0.004,
                 prefix: str = "", seed: int = 0, encoding: str = "rgb8"):
        self.node = node
        self.rng = np.random.default_rng(seed)
        self.jitter_ns = int(jitter_s * 1e9)
        self.silent: set[str] = set()
        self.sent = {name: 0 for name in sc.CAMERA_NAMES}
        self.pubs = {
            name: node.create_publisher(Image, f"{prefix}camera/{name}/image_raw", RELIABLE)
            for name in sc.CAMERA_NAMES
        }
        self.instruction_pub = node.create_publisher(String, f"{prefix}instruction", LATCHED)
        self.encoding = encoding
        self.set_scene(scene)
        self.timer = node.create_timer(1.0 / rate_hz, self._tick)

    def set_scene(self, scene: sc.Scene) -> None:
        self.scene = scene
        self.msgs = {name: image_msg(sc.render(scene, name), f"camera_{name}", self.encoding)
                     for name in sc.CAMERA_NAMES}

    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def _tick(self) -> None:
        now = self.node.get_clock().now().nanoseconds
        for name, pub in self.pubs.items():
            if name in self.silent:
                continue
            msg = self.msgs[name]
            set_stamp(msg, now + int(self.rng.integers(-self.jitter_ns, self.jitter_ns + 1)))
            pub.publish(msg)
            self.sent[name] += 1


class SimArm:
    """An arm that tracks the commanded positions perfectly and reports joint_states at
    `rate_hz`, in its own joint order plus joints the controller does not command
    (`extra`: (name, position) pairs, one by default; a test may set others)."""

    EXTRA = [("camera_tilt", 0.0)]

    def __init__(self, node: Node, q0: np.ndarray, rate_hz: float = 100.0, prefix: str = "",
                 command_topic: str = "joint_commands"):
        self.node = node
        self.q = np.array(q0, dtype=float)
        self.names = list(reversed(sc.JOINT_NAMES))
        self.extra = list(self.EXTRA)
        self.pub = node.create_publisher(JointState, f"{prefix}joint_states", RELIABLE)
        # An absolute command topic (a remapped controller's) is taken as it is.
        command_topic = command_topic if command_topic.startswith("/") else f"{prefix}{command_topic}"
        self.sub = node.create_subscription(Float64MultiArray, command_topic, self._on_command, RELIABLE)
        self.timer = node.create_timer(1.0 / rate_hz, self._tick)
        self.lock = threading.Lock()

    def _on_command(self, msg: Float64MultiArray) -> None:
        if len(msg.data) == len(sc.JOINT_NAMES):
            with self.lock:
                self.q = np.array(msg.data, dtype=float)

    def position(self) -> np.ndarray:
        with self.lock:
            return self.q.copy()

    def _tick(self) -> None:
        msg = JointState()
        set_stamp(msg, self.node.get_clock().now().nanoseconds)
        extra = self.extra
        msg.name = self.names + [name for name, _ in extra]
        with self.lock:
            q = self.q.copy()
        msg.position = [float(v) for v in reversed(q)] + [float(v) for _, v in extra]
        self.pub.publish(msg)


@dataclass
class Recorder:
    commands: list[tuple[float, list[float]]] = field(default_factory=list)
    diagnostics: list[tuple[float, DiagnosticArray]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, node: Node, command_topic: str = "joint_commands", command_type=Float64MultiArray) -> None:
        node.create_subscription(command_type, command_topic, self._on_command, RELIABLE)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RELIABLE)

    def _on_command(self, msg) -> None:
        value = list(msg.data) if isinstance(msg, Float64MultiArray) else msg
        with self.lock:
            self.commands.append((time.monotonic(), value))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.append((time.monotonic(), msg))

    def commands_since(self, t: float) -> list[tuple[float, list[float]]]:
        with self.lock:
            return [c for c in self.commands if c[0] >= t]

    def last_status(self, name_part: str = "vla_controller"):
        with self.lock:
            for _, arr in reversed(self.diagnostics):
                for st in arr.status:
                    if name_part in st.name:
                        return st
        return None


class Peers:
    """An rclpy node spinning in a background thread."""

    def __init__(self, name: str = "vla_peers"):
        if not rclpy.ok():
            rclpy.init()
        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.running = True

    def start(self) -> "Peers":
        self.thread.start()
        return self

    def _spin(self) -> None:
        while self.running and rclpy.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.executor.remove_node(self.node)
        self.node.destroy_node()


# ------------------------------------------------------------- scenarios on the graph

#: The node's control rate in config/controller.yaml, and the arm's start pose.
CONTROL_RATE = 50.0
START = np.array([0.0, 1.2, -1.8, -0.9, 0.0, 0.04])


def two_sided_scene(seed: int = 3):
    """A scene with one item well to the left (y > 0.12) and one well to the right, each
    the only item of its colour. Tests with it are about the node; the demo policy's
    known weak spot (two items of the instructed colour, see policy/README.md) is
    measured by its own evaluation."""
    rng = np.random.default_rng(seed)
    while True:
        s = sc.sample_scene(rng, 4)
        colours = [it.colour for it in s.items]
        unique = [i for i, it in enumerate(s.items) if colours.count(it.colour) == 1]
        left = [i for i in unique if s.items[i].y > 0.12]
        right = [i for i in unique if s.items[i].y < -0.12]
        if left and right:
            return s, left[0], right[0]


def instruction(s, i, lang="en", verb="move_above"):
    it = s.items[i]
    return sc.instruction_text(it.colour, it.shape, verb, lang)


def xy_error(q, s, i) -> float:
    """How far the tool is from item `i` of scene `s` in the table plane, in metres."""
    tip = sc.fk(q)
    return float(np.hypot(tip[0] - s.items[i].x, tip[1] - s.items[i].y))


def status(peers):
    """(level, message) of the node's last diagnostic status; level as an int."""
    st = peers.recorder.last_status()
    if st is None:
        return None
    level = st.level if isinstance(st.level, int) else ord(st.level)
    return level, st.message


def diag_value(peers, key):
    """The value of `key` in the node's last diagnostic status."""
    st = peers.recorder.last_status()
    return next((kv.value for kv in st.values if kv.key == key), None) if st else None


def setup_graph(peers, s, text, prefix=""):
    """Cameras showing scene `s`, a simulated arm at START, the recorder on the node's
    commands, and instruction `text` (unless None)."""
    cams = ScenePublisher(peers.node, s, prefix=prefix)
    arm = SimArm(peers.node, START, prefix=prefix)
    peers.recorder.attach(peers.node, f"{prefix}joint_commands")
    peers.start()
    if text is not None:
        cams.instruct(text)
    return cams, arm
