"""One test per kind of bad (or odd but valid) input, against the live node on a running
graph: each time the node keeps running and commanding, every command within the joint
limits and the step limit of config/controller.yaml, nothing is computed from a bad
message (no chunk carries its stamp), and the message is counted in /diagnostics under
its reason, or as used when the node uses it (README, "Bad input")."""

from __future__ import annotations

import math
import os
import random
import time

import numpy as np
import pytest
import yaml
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from vla_controller_msgs.msg import InferenceTiming

from vla_demo.node_process import PARAMS, NodeProcess, wait_for
from vla_demo.ros_peers import START, diag_value, instruction, setup_graph, status, two_sided_scene
from vla_demo import scene as sc
from vla_demo.ros_peers import LATCHED, RELIABLE, Peers, Recorder, image_msg, set_stamp

#: The limits every command must keep, from the parameters file the node runs with.
_P = yaml.safe_load(PARAMS.read_text())["/**"]["ros__parameters"]
LOWER, UPPER, STEP = (np.array(_P[k]) for k in ("joint_lower_limits", "joint_upper_limits", "max_step_per_tick"))


@pytest.fixture(scope="module")
def graph():
    peers = Peers(f"bad_inputs_{os.getpid()}_{random.randint(0, 1 << 30)}")
    peers.recorder = Recorder()
    s, left, _ = two_sided_scene(21)
    cams, arm = setup_graph(peers, s, instruction(s, left))
    chunks = []
    peers.node.create_subscription(InferenceTiming, "/vla_controller/timing/chunk",
                                   lambda m: chunks.append(m.source.sec * 10**9 + m.source.nanosec), QoSProfile(depth=1000))
    node = NodeProcess.node()
    wait_for(lambda: status(peers) and status(peers)[1] == "running", 60, "the node running")
    g = {
        "peers": peers, "node": node, "chunks": chunks, "scene": s, "cams": cams, "arm": arm,
        "image": peers.node.create_publisher(Image, "camera/side/image_raw", RELIABLE),
        "joints": peers.node.create_publisher(JointState, "joint_states", RELIABLE),
        "instruction": peers.node.create_publisher(String, "instruction", LATCHED),
    }
    yield g
    node.stop()
    peers.close()


def counter(g, key) -> int:
    return int(diag_value(g["peers"], key) or 0)


def safe_commands(g, since: float):
    """The node commands on, and nothing unsafe: every command finite, within the joint
    limits, and within one step of the previous one."""
    wait_for(lambda: len(g["peers"].recorder.commands_since(since)) >= 10, 5, "commands to go on")
    cmds = np.array([c for _, c in g["peers"].recorder.commands_since(since)])
    assert np.isfinite(cmds).all()
    assert (cmds >= LOWER).all() and (cmds <= UPPER).all(), "commands within the joint limits"
    assert (np.abs(np.diff(cmds, axis=0)) <= STEP + 1e-9).all(), "commands within the step limit"


def alive(g, since: float):
    assert g["node"].proc.poll() is None, "the node is running"
    safe_commands(g, since)
    wait_for(lambda: status(g["peers"])[1] == "running", 5, "the node running")


def check(g, key, publish, expect: int = 1):
    """Publishes a bad message (`publish(stamp)`), then waits for the counter `key` to
    grow by `expect`, and checks the node is alive, running and commanding safely, and
    that no chunk came from the bad stamp."""
    before = counter(g, key)
    stamp = time.time_ns() + 1234  # unique: no good message has it
    t0 = time.monotonic()
    publish(stamp)
    wait_for(lambda: counter(g, key) >= before + expect, 10, f"{key} to count the message")
    alive(g, t0)
    assert stamp not in g["chunks"], "a chunk was computed from the bad message"


def check_used(g, topic, publish, expect: int = 10):
    """Runs `publish()` (good but unusual messages on `topic`), then checks they were
    used: `used/<topic>` grows by `expect` while nothing on it is rejected, and the node
    runs on, commanding safely."""
    used, rejected = counter(g, f"used/{topic}"), rejected_on(g, topic)
    t0 = time.monotonic()
    publish()
    wait_for(lambda: counter(g, f"used/{topic}") >= used + expect, 10, f"used/{topic} to grow by {expect}")
    assert rejected_on(g, topic) == rejected, "nothing rejected"
    alive(g, t0)


def rejected_on(g, topic) -> int:
    st = g["peers"].recorder.last_status()
    return sum(int(kv.value) for kv in st.values if kv.key.startswith(f"rejected/{topic}/"))


def counters_on(g, prefix) -> int:
    st = g["peers"].recorder.last_status()
    return sum(int(kv.value) for kv in st.values if kv.key.startswith(prefix))


def image(stamp, width=640, height=480, encoding="rgb8", step=None, data=None):
    m = Image()
    set_stamp(m, stamp)
    m.header.frame_id = "camera_side"
    m.width, m.height, m.encoding = width, height, encoding
    m.step = width * 3 if step is None else step
    m.data = bytes(m.step * height) if data is None else data
    return m


REJECTED = "rejected/camera/side/image_raw/"


def test_image_of_the_wrong_size(graph):
    check(graph, REJECTED + "image size differs from image_width x image_height",
          lambda t: graph["image"].publish(image(t, 320, 240)))


def test_image_with_an_unsupported_encoding(graph):
    check(graph, REJECTED + "unsupported encoding", lambda t: graph["image"].publish(image(t, encoding="yuv422", step=1280)))


def test_image_whose_step_is_too_small(graph):
    check(graph, REJECTED + "step below width x channels", lambda t: graph["image"].publish(image(t, step=100, data=bytes(100 * 480))))


def test_image_whose_data_does_not_match_step_and_height(graph):
    check(graph, REJECTED + "data length differs from step x height",
          lambda t: graph["image"].publish(image(t, data=bytes(640 * 3 * 479))))


def test_image_with_empty_data(graph):
    check(graph, REJECTED + "data length differs from step x height", lambda t: graph["image"].publish(image(t, data=b"")))


def joint_state(stamp, names=None, positions=None):
    m = JointState()
    set_stamp(m, stamp)
    m.name = list(sc.JOINT_NAMES if names is None else names)
    m.position = [float(v) for v in (START if positions is None else positions)]
    return m


def test_joint_state_with_missing_joints(graph):
    check(graph, "rejected/joint_states/missing joints",
          lambda t: graph["joints"].publish(joint_state(t, names=sc.JOINT_NAMES[:4], positions=START[:4])))


def test_joint_state_with_mismatched_arrays(graph):
    check(graph, "rejected/joint_states/names and positions differ in length",
          lambda t: graph["joints"].publish(joint_state(t, positions=START[:5])))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_joint_state_with_non_finite_positions(graph, bad):
    q = list(START)
    q[2] = bad
    check(graph, "rejected/joint_states/non-finite position", lambda t: graph["joints"].publish(joint_state(t, positions=q)))


def say(graph, text):
    graph["instruction"].publish(String(data=text))


def test_empty_instruction(graph):
    check(graph, "rejected/instruction/empty instruction", lambda t: say(graph, "   "))


def test_instruction_beyond_the_token_limit(graph):
    check(graph, "rejected/instruction/instruction longer than the policy's token limit",
          lambda t: say(graph, "move above the red block " * 5))


def test_instruction_with_control_characters(graph):
    check(graph, "rejected/instruction/instruction holds control characters", lambda t: say(graph, "move\x07 above\x1b[2J"))


def test_mixed_script_instruction_is_accepted(graph):
    """Chinese and English in one instruction is valid input: the tokenizer has both."""
    s = graph["scene"]
    it = s.items[0]
    used = counter(graph, "used/instruction")
    say(graph, f"move above the {sc.ZH_COLOURS[it.colour]} {it.shape}")
    wait_for(lambda: counter(graph, "used/instruction") == used + 1, 10, "the instruction used")
    say(graph, instruction(s, 0))  # back to a plain one for the tests after


def test_camera_stamps_going_backwards_and_duplicated(graph):
    key = "dropped/camera/side/image_raw/stamp not later than the previous one"

    def old_then_duplicate(t):
        past = t - 5 * 10**9
        graph["image"].publish(image(past, data=bytes(640 * 480 * 3)))
        graph["image"].publish(image(past, data=bytes(640 * 480 * 3)))

    check(graph, key, old_then_duplicate, expect=2)


def test_a_flood_of_bad_messages_is_counted_in_full_and_logged_rate_limited(graph):
    key = REJECTED + "unsupported encoding"
    before = counter(graph, key)
    for k in range(30):
        graph["image"].publish(image(time.time_ns() + k, encoding="yuv422", step=1280))
        time.sleep(0.005)
    wait_for(lambda: counter(graph, key) >= before + 30, 10, "all 30 counted")
    lines = [l for l in graph["node"].output().splitlines() if "unsupported encoding" in l and "camera/side" in l]
    assert 1 <= len(lines) <= 3, f"{len(lines)} log lines for {counter(graph, key)} rejections"


# ------------------------------------------------------------- odd streams on a camera

SIDE = "camera/side/image_raw"


def side_scene_image(g, encoding="rgb8", frame_id="camera_side"):
    """The side camera's scene image in `encoding` (what a camera driver reconfigured at
    run time would send)."""
    rgb = sc.render(g["scene"], "side")
    if encoding in ("rgb8", "bgr8"):
        return image_msg(rgb, frame_id, encoding)
    if encoding == "mono8":
        pixels, channels = rgb.mean(axis=2).round().astype(np.uint8), 1
    else:  # rgba8, bgra8
        order = rgb if encoding == "rgba8" else rgb[:, :, ::-1]
        pixels, channels = np.dstack([order, np.full(rgb.shape[:2], 255, np.uint8)]), 4
    m = image_msg(rgb, frame_id)
    m.encoding, m.step, m.data = encoding, 640 * channels, np.ascontiguousarray(pixels).tobytes()
    return m


def stream_side(g, messages, seconds=1.5):
    """The scene publisher sends `messages` (cycled) as the side camera, in step with the
    other cameras, for `seconds`; then the scene's own side image again."""
    cams = g["cams"]
    original = cams.msgs["side"]
    t_end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < t_end:
        cams.msgs["side"] = messages[k % len(messages)]
        k += 1
        time.sleep(1 / 30)
    cams.msgs["side"] = original


def test_frame_id_that_changes_mid_stream(graph):
    """Used: the pixels are good. Overlays carry each image's own frame, so RViz draws an
    overlay where its image was taken."""
    overlays = []
    sub = graph["peers"].node.create_subscription(Image, "/vla_controller/attention/side",
                                                  lambda m: overlays.append(m.header.frame_id), QoSProfile(depth=10))
    try:
        check_used(graph, SIDE, lambda: stream_side(graph, [side_scene_image(graph, frame_id="camera_side_moved")], 6.0))
        wait_for(lambda: "camera_side_moved" in overlays, 30, "an overlay in the new frame")
    finally:
        graph["peers"].node.destroy_subscription(sub)


def test_encoding_that_changes_mid_stream(graph):
    """Every supported encoding is decoded per message: a camera that switches is used."""
    msgs = [side_scene_image(graph, e) for e in ("rgb8", "bgr8", "mono8", "rgba8", "bgra8")]
    check_used(graph, SIDE, lambda: stream_side(graph, msgs))


def test_image_with_padded_rows_and_a_big_endian_flag(graph):
    """Row padding (step beyond width x 3) is skipped; is_bigendian means nothing for
    8-bit channels."""
    m = side_scene_image(graph)
    rows = np.frombuffer(bytes(m.data), np.uint8).reshape(480, 640 * 3)
    m.step, m.data, m.is_bigendian = 640 * 3 + 64, np.hstack([rows, np.zeros((480, 64), np.uint8)]).tobytes(), 1
    check_used(graph, SIDE, lambda: stream_side(graph, [m]))


def test_image_whose_header_claims_a_huge_size(graph):
    """Checked before anything is allocated for it."""
    check(graph, REJECTED + "image size differs from image_width x image_height",
          lambda t: graph["image"].publish(image(t, 100_000, 100_000, step=300_000, data=bytes(64))))


def test_depth_image_on_a_camera_topic(graph):
    check(graph, REJECTED + "unsupported encoding",
          lambda t: graph["image"].publish(image(t, encoding="32FC1", step=640 * 4, data=bytes(640 * 4 * 480))))


@pytest.mark.parametrize("topic", ["camera", "joint_states"])
def test_stamp_far_in_the_future(graph, topic):
    """Rejected: stamps must increase, so one stamp an hour ahead would make every later
    message of its topic look late for an hour. The stream goes on being used."""
    hour = 3600 * 10**9
    if topic == "camera":
        key, used = REJECTED + "stamp ahead of the clock by more than max_stamp_lead_s", f"used/{SIDE}"
        publish = lambda t: graph["image"].publish(image(t + hour, data=bytes(640 * 480 * 3)))  # noqa: E731
    else:
        key, used = "rejected/joint_states/stamp ahead of the clock by more than max_stamp_lead_s", "used/joint_states"
        publish = lambda t: graph["joints"].publish(joint_state(t + hour))  # noqa: E731
    check(graph, key, publish)
    before = counter(graph, used)
    wait_for(lambda: counter(graph, used) >= before + 10, 10, f"{used} to go on")


@pytest.mark.parametrize("sec", [0, -5])
def test_zero_or_negative_stamp(graph, sec):
    """A driver that does not stamp its messages: a clear reason, not 'stamp not later
    than the previous one' for every message after the first."""
    def publish(_t):
        m = image(0, data=bytes(640 * 480 * 3))
        m.header.stamp.sec, m.header.stamp.nanosec = sec, 0
        graph["image"].publish(m)
        js = joint_state(0)
        js.header.stamp.sec, js.header.stamp.nanosec = sec, 0
        graph["joints"].publish(js)
    before = counter(graph, "rejected/joint_states/stamp not set (zero or negative)")
    check(graph, REJECTED + "stamp not set (zero or negative)", publish)
    wait_for(lambda: counter(graph, "rejected/joint_states/stamp not set (zero or negative)") == before + 1, 5, "the joint state")


def test_camera_at_ten_times_its_rate(graph):
    """A flood of good frames (300 Hz where 30 are expected): each is used, dropped by
    the synchronizer with its reason (a closer frame was used), or still queued; the
    node commands as before."""
    def received():
        return counter(graph, f"received/{SIDE}")
    before = {"received": received(), "used": counter(graph, f"used/{SIDE}"), "dropped": counters_on(graph, f"dropped/{SIDE}/")}
    graph["cams"].silent.add("side")
    frame = side_scene_image(graph)
    sent, t0 = 0, time.monotonic()
    try:
        while time.monotonic() - t0 < 2.0:
            set_stamp(frame, time.time_ns())
            graph["image"].publish(frame)
            sent += 1
            time.sleep(max(0.0, t0 + sent / 300 - time.monotonic()))
    finally:
        graph["cams"].silent.discard("side")
    assert sent >= 300, f"{sent} frames in 2 s"
    # Best effort: some frames may be lost on the way; count what arrived.
    wait_for(lambda: received() >= before["received"] + sent // 2, 10, "the frames received")
    alive(graph, t0)
    d_received = received() - before["received"]
    d_used = counter(graph, f"used/{SIDE}") - before["used"]
    d_dropped = counters_on(graph, f"dropped/{SIDE}/") - before["dropped"]
    assert d_used < d_received / 3 and d_dropped > d_received / 2, (d_received, d_used, d_dropped)
    assert d_used + d_dropped + 2 * int(_P["sync_queue_size"]) >= d_received, "every frame used, dropped or queued"
    assert counter(graph, f"dropped/{SIDE}/sync: a closer message was used") > 0


def test_publisher_that_switches_from_best_effort_to_reliable(graph):
    """The camera subscriptions are best effort, which matches both kinds of publisher:
    the frames of either are used."""
    cams, node = graph["cams"], graph["peers"].node
    original = cams.pubs["side"]
    try:
        for reliability in (ReliabilityPolicy.BEST_EFFORT, ReliabilityPolicy.RELIABLE):
            pub = node.create_publisher(Image, SIDE, QoSProfile(depth=5, reliability=reliability))
            cams.pubs["side"] = pub
            check_used(graph, SIDE, lambda: time.sleep(2.0), expect=20)
            # Kept, not destroyed: the publishing thread may still hold it.
            cams.pubs["side"] = original
    finally:
        cams.pubs["side"] = original


# ---------------------------------------------------------------- odd joint states

def test_joint_state_with_duplicate_names(graph):
    """Which of the two positions is the joint's? Neither is used."""
    names = list(sc.JOINT_NAMES) + [sc.JOINT_NAMES[2]]
    check(graph, "rejected/joint_states/duplicate joint names",
          lambda t: graph["joints"].publish(joint_state(t, names=names, positions=list(START) + [0.3])))


def test_joint_state_with_extra_unknown_joints_is_used(graph):
    """Extra joints (a camera mount, a mimic finger) are ignored, even repeated or not
    finite; the configured ones are used."""
    arm = graph["arm"]
    before, rejected = counter(graph, "used/joint_states"), rejected_on(graph, "joint_states")
    t0 = time.monotonic()
    arm.extra = [("camera_tilt", 0.1), ("finger_mimic", math.nan), ("camera_tilt", 0.2)]
    try:
        wait_for(lambda: counter(graph, "used/joint_states") >= before + 100, 10, "the joint states used")
    finally:
        arm.extra = list(arm.EXTRA)
    assert rejected_on(graph, "joint_states") == rejected, "none rejected"
    alive(graph, t0)


def test_joint_state_with_empty_arrays(graph):
    check(graph, "rejected/joint_states/missing joints", lambda t: graph["joints"].publish(joint_state(t, names=[], positions=[])))


# ------------------------------------------------------------------- odd instructions

@pytest.mark.parametrize("text", ["  🤖🦾 \u3000", "😀 😀 😀", "\u200b"])
def test_instruction_of_whitespace_and_emoji(graph, text):
    """No character the policy knows: acting on it would be acting on nothing. The
    previous instruction stays in effect."""
    check(graph, "rejected/instruction/instruction has no token in the policy's vocabulary", lambda t: say(graph, text))


def test_instruction_of_exotic_whitespace_only(graph):
    check(graph, "rejected/instruction/empty instruction", lambda t: say(graph, "\u3000\u00a0\t\n"))


def test_one_megabyte_instruction(graph):
    """Rejected for its length; the log line about it stays short."""
    log_before = len(graph["node"].output())
    check(graph, "rejected/instruction/instruction longer than the policy's token limit",
          lambda t: say(graph, "move above the red block " * 42_000))
    new_lines = graph["node"].output()[log_before:].splitlines()
    assert all(len(line) < 2000 for line in new_lines), max(map(len, new_lines))
