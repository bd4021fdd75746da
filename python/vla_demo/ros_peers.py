"""rclpy peers of the vla_controller node, used by the demo and the integration tests:

- `ScenePublisher`: the three cameras (one synthetic scene, re-stamped every frame with
  jitter) and the instruction (reliable, transient local, like a latched topic);
- `SimArm`: a simulated arm that follows the node's joint commands (a forward
  controller's arrays, or trajectories as joint_trajectory_controller executes them,
  and the gripper's own commands) and publishes `joint_states` (names in its own
  order, with an extra joint, as real drivers do);
- `Recorder`: keeps what the node publishes (commands, diagnostics) with arrival times.

Everything runs in one executor thread (`Peers`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from . import scene as sc
from .node_process import wait_for

LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
#: What a recorder subscribes with: a queue deep enough that a peers' thread held up for
#: a while on a loaded machine takes every message later instead of losing the oldest
#: (tests compare consecutive messages).
RECORDING = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)


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
    """Publishes one scene's camera images at `rate_hz` and an instruction: the three
    cameras at 640x480 by default, or the `cameras` named, each at its `sizes` entry
    (width, height) where it has one."""

    def __init__(self, node: Node, scene: sc.Scene, rate_hz: float = 30.0, jitter_s: float = 0.004,
                 prefix: str = "", seed: int = 0, encoding: str = "rgb8",
                 cameras: tuple[str, ...] = sc.CAMERA_NAMES, sizes: dict[str, tuple[int, int]] | None = None):
        self.node = node
        self.rng = np.random.default_rng(seed)
        self.jitter_ns = int(jitter_s * 1e9)
        self.silent: set[str] = set()
        self.cameras = tuple(cameras)
        self.sizes = dict(sizes or {})
        self.sent = {name: 0 for name in self.cameras}
        self.pubs = {
            name: node.create_publisher(Image, f"{prefix}camera/{name}/image_raw", RELIABLE)
            for name in self.cameras
        }
        self.instruction_pub = node.create_publisher(String, f"{prefix}instruction", LATCHED)
        self.encoding = encoding
        self.set_scene(scene)
        self.timer = node.create_timer(1.0 / rate_hz, self._tick)

    def set_scene(self, scene: sc.Scene) -> None:
        self.scene = scene
        self.msgs = {name: image_msg(sc.render(scene, name, *self.sizes.get(name, (640, 480))), f"camera_{name}", self.encoding)
                     for name in self.cameras}

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


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class SimArm:
    """An arm that tracks the commanded positions perfectly and reports joint_states at
    `rate_hz`, in its own joint order plus joints the controller does not command
    (`extra`: (name, position) pairs, one by default; a test may set others).

    Commands: Float64MultiArray on `command_topic` (all joints, or all but the gripper
    when `gripper_topic` is given), or with `command_type=JointTrajectory` trajectories,
    followed as joint_trajectory_controller does: from where the arm is when one
    arrives, linearly through its points at `header.stamp + time_from_start` (a zero
    stamp: from arrival), holding the last; a new trajectory replaces the old."""

    EXTRA = [("camera_tilt", 0.0)]

    def __init__(self, node: Node, q0: np.ndarray, rate_hz: float = 100.0, prefix: str = "",
                 command_topic: str = "joint_commands", command_type=Float64MultiArray,
                 gripper_topic: str | None = None):
        self.node = node
        self.lock = threading.Lock()
        self.sent = 0  # joint_states published
        self.q = np.array(q0, dtype=float)
        self.names = list(reversed(sc.JOINT_NAMES))
        self.extra = list(self.EXTRA)
        self.gripper = sc.JOINT_NAMES.index("gripper") if gripper_topic else None
        self.arm = [i for i in range(len(sc.JOINT_NAMES)) if i != self.gripper]
        self.trajectory = None  # (joint indices, [(t_ns, positions)])
        self.pub = node.create_publisher(JointState, f"{prefix}joint_states", RELIABLE)
        # An absolute command topic (a remapped controller's) is taken as it is.
        topic = lambda t: t if t.startswith("/") else f"{prefix}{t}"  # noqa: E731
        on_command = self._on_trajectory if command_type is JointTrajectory else self._on_command
        self.sub = node.create_subscription(command_type, topic(command_topic), on_command, RELIABLE)
        if gripper_topic:
            node.create_subscription(Float64MultiArray, topic(gripper_topic), self._on_gripper, RELIABLE)
        self.timer = node.create_timer(1.0 / rate_hz, self._tick)

    def _on_command(self, msg: Float64MultiArray) -> None:
        if len(msg.data) == len(self.arm):
            with self.lock:
                self.q[self.arm] = np.array(msg.data, dtype=float)

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        if len(msg.data) == 1:
            with self.lock:
                self.q[self.gripper] = float(msg.data[0])

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        now = self.node.get_clock().now().nanoseconds
        idx = [sc.JOINT_NAMES.index(n) for n in msg.joint_names]
        start = stamp_ns(msg.header.stamp) or now
        with self.lock:
            points = [(now, self.q[idx].copy())]
            points += [(start + p.time_from_start.sec * 10**9 + p.time_from_start.nanosec, np.array(p.positions))
                       for p in msg.points]
            self.trajectory = (idx, points)

    def _sample(self, now: int) -> None:
        idx, points = self.trajectory
        for (t0, q0), (t1, q1) in zip(points, points[1:]):
            if now < t1:
                a = 0.0 if t1 <= t0 else min(max((now - t0) / (t1 - t0), 0.0), 1.0)
                self.q[idx] = q0 + a * (q1 - q0)
                return
        self.q[idx] = points[-1][1]

    def position(self) -> np.ndarray:
        with self.lock:
            return self.q.copy()

    def _tick(self) -> None:
        msg = JointState()
        now = self.node.get_clock().now().nanoseconds
        set_stamp(msg, now)
        extra = self.extra
        msg.name = self.names + [name for name, _ in extra]
        with self.lock:
            if self.trajectory is not None:
                self._sample(now)
            q = self.q.copy()
        msg.position = [float(v) for v in reversed(q)] + [float(v) for _, v in extra]
        self.pub.publish(msg)
        self.sent += 1


@dataclass
class Recorder:
    commands: list[tuple[float, list[float]]] = field(default_factory=list)
    gripper: list[tuple[float, list[float]]] = field(default_factory=list)
    diagnostics: list[tuple[float, DiagnosticArray]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, node: Node, command_topic: str = "joint_commands", command_type=Float64MultiArray,
               gripper_topic: str | None = None) -> None:
        node.create_subscription(command_type, command_topic, self._on_command, RECORDING)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RELIABLE)
        if gripper_topic:
            node.create_subscription(Float64MultiArray, gripper_topic, self._on_gripper, RECORDING)

    def _on_command(self, msg) -> None:
        value = list(msg.data) if isinstance(msg, Float64MultiArray) else msg
        with self.lock:
            self.commands.append((time.monotonic(), value))

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        with self.lock:
            self.gripper.append((time.monotonic(), list(msg.data)))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.append((time.monotonic(), msg))

    def commands_since(self, t: float) -> list[tuple[float, list[float]]]:
        with self.lock:
            return [c for c in self.commands if c[0] >= t]

    def last_status(self, name_part: str = "vla_controller"):
        """The newest status whose name holds `name_part`; of one array, the first
        (the pipeline's, which comes first)."""
        with self.lock:
            for _, arr in reversed(self.diagnostics):
                for st in arr.status:
                    if name_part in st.name:
                        return st
        return None


class Peers:
    """An rclpy node spinning in a background thread, in a context of its own: on the ROS
    domain that ROS_DOMAIN_ID names when it is made."""

    def __init__(self, name: str = "vla_peers"):
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.running = True

    def start(self) -> "Peers":
        self.thread.start()
        return self

    def _spin(self) -> None:
        while self.running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.running = False
        if self.thread.ident is not None:  # a test may fail before it starts the peers
            self.thread.join(timeout=5)
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown()
        self.context.try_shutdown()


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


def call(node, srv_type, name: str, request, timeout: float = 10.0):
    """Calls service `name` and returns its response (the peers' executor spins)."""
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), f"service {name}"
    fut = client.call_async(request)
    wait_for(fut.done, timeout, f"a response of {name}")
    node.destroy_client(client)
    return fut.result()


def set_param(node, name: str, value, target: str = "/vla_controller"):
    """Sets parameter `name` of node `target` (bool, number or string); returns the
    SetParametersResult."""
    v = ParameterValue()
    if isinstance(value, bool):
        v.type, v.bool_value = ParameterType.PARAMETER_BOOL, value
    elif isinstance(value, str):
        v.type, v.string_value = ParameterType.PARAMETER_STRING, value
    else:
        v.type, v.double_value = ParameterType.PARAMETER_DOUBLE, float(value)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=v)])
    return call(node, SetParameters, f"{target}/set_parameters", request).results[0]


def setup_graph(peers, s, text, prefix="", command_type=Float64MultiArray, gripper_topic=None, **cameras):
    """Cameras showing scene `s` (`cameras` as ScenePublisher takes them), a simulated
    arm at START, the recorder on the node's commands (of `command_type`; and the
    gripper's on `gripper_topic`), and instruction `text` (unless None)."""
    cams = ScenePublisher(peers.node, s, prefix=prefix, **cameras)
    arm = SimArm(peers.node, START, prefix=prefix, command_type=command_type, gripper_topic=gripper_topic)
    peers.recorder.attach(peers.node, f"{prefix}joint_commands", command_type,
                          f"{prefix}{gripper_topic}" if gripper_topic else None)
    peers.start()
    if text is not None:
        cams.instruct(text)
    return cams, arm



def wait_until_serving(peers, node: str = "vla_controller") -> None:
    """Until `peers.recorder` has two /diagnostics messages from the node: past its
    start-up, with its SIGINT handler in place, so that stopping it is a clean shutdown."""
    def published() -> int:
        with peers.recorder.lock:
            return sum(any(node in st.name for st in arr.status) for _, arr in peers.recorder.diagnostics)
    wait_for(lambda: published() >= 2, 60, "the node's diagnostics")
