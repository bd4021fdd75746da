"""One test per bad input, against the live node on a running graph: each time the node
keeps running and commanding, computes nothing from the bad message (no chunk carries
its stamp), and counts it in /diagnostics under its reason."""

from __future__ import annotations

import math
import os
import random
import time

import numpy as np
import pytest
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from vla_controller_msgs.msg import InferenceTiming

from vla_demo.node_process import NodeProcess, wait_for
from vla_demo.ros_peers import START, diag_value, instruction, setup_graph, status, two_sided_scene
from vla_demo import scene as sc
from vla_demo.ros_peers import LATCHED, RELIABLE, Peers, Recorder, set_stamp


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
        "peers": peers, "node": node, "chunks": chunks, "scene": s,
        "image": peers.node.create_publisher(Image, "camera/side/image_raw", RELIABLE),
        "joints": peers.node.create_publisher(JointState, "joint_states", RELIABLE),
        "instruction": peers.node.create_publisher(String, "instruction", LATCHED),
    }
    yield g
    node.stop()
    peers.close()


def counter(g, key) -> int:
    return int(diag_value(g["peers"], key) or 0)


def check(g, key, publish, expect: int = 1):
    """Publishes a bad message (`publish(stamp)`), then waits for the counter `key` to
    grow by `expect`, and checks the node is alive, running and commanding, and that no
    chunk came from the bad stamp."""
    before = counter(g, key)
    stamp = time.time_ns() + 1234  # unique: no good message has it
    publish(stamp)
    wait_for(lambda: counter(g, key) >= before + expect, 10, f"{key} to count the message")
    t0 = time.monotonic()
    wait_for(lambda: len(g["peers"].recorder.commands_since(t0)) >= 10, 5, "commands to go on")
    assert g["node"].proc.poll() is None, "the node is running"
    assert stamp not in g["chunks"], "a chunk was computed from the bad message"
    wait_for(lambda: status(g["peers"])[1] == "running", 5, "the node running")
    assert all(math.isfinite(v) for _, c in g["peers"].recorder.commands_since(t0) for v in c)


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
