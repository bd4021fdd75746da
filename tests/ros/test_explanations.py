"""Explanations from the live node: the four image topics, the typed messages, predicted
motion, and run-time changes through the parameter services, while commands keep their
rate."""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from vla_controller_msgs.msg import ActivationGrid, TokenAttention

from vla_demo.node_process import wait_for
from vla_demo.ros_peers import CONTROL_RATE, instruction, set_param, setup_graph, two_sided_scene
from vla_demo import scene as sc

QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


class Latest:
    """Keeps the last message per topic, and counts them."""

    def __init__(self, node, topics):
        self.lock = threading.Lock()
        self.msgs, self.counts = {}, {}
        for topic, kind in topics.items():
            node.create_subscription(kind, topic, self._cb(topic), QOS)

    def _cb(self, topic):
        def cb(msg):
            with self.lock:
                self.msgs[topic] = msg
                self.counts[topic] = self.counts.get(topic, 0) + 1
        return cb

    def get(self, topic):
        with self.lock:
            return self.msgs.get(topic)

    def all(self, topics):
        return all(self.get(t) is not None for t in topics)


def test_explanations_arrive_while_commands_keep_their_rate(peers, start_node):
    s, left, _ = two_sided_scene(11)
    text = instruction(s, left)
    images = {f"/vla_controller/attention/{n}": Image for n in ("language", *sc.CAMERA_NAMES)}
    typed = {"/vla_controller/attention/tokens": TokenAttention, "/vla_controller/attention/grids": ActivationGrid}
    latest = Latest(peers.node, {**images, **typed, "/vla_controller/predicted_joint_states": JointState})
    setup_graph(peers, s, text)
    start_node("-p", "explain_rate_hz:=10.0")

    wait_for(lambda: latest.all([*images, *typed]), 90, "all explanation topics (occlusion on CPU)")
    t0 = time.monotonic()
    wait_for(lambda: latest.counts.get("/vla_controller/attention/main", 0) >= 2, 60, "a second explanation")
    window = peers.recorder.commands_since(t0)
    rate = len(window) / (time.monotonic() - t0)
    assert rate >= 0.8 * CONTROL_RATE, f"commands at {rate:.1f}/s while explaining"

    for cam in sc.CAMERA_NAMES:
        img = latest.get(f"/vla_controller/attention/{cam}")
        assert (img.width, img.height, img.encoding, img.step) == (640, 480, "rgb8", 640 * 3)
        assert img.header.frame_id == f"camera_{cam}", "overlays carry the source image's frame"
        assert len(img.data) == 640 * 480 * 3
    lang = latest.get("/vla_controller/attention/language")
    assert lang.encoding == "rgb8" and lang.width == 640 and lang.height > 0

    tokens = latest.get("/vla_controller/attention/tokens")
    assert tokens.instruction == text
    assert "".join(tokens.tokens) == text.lower()
    assert abs(sum(tokens.weights) - 1.0) < 1e-3
    assert tokens.threshold == np.float32(0.3)
    assert tokens.method == "policy_attention", "auto: the demo policy's own token weights"

    grid = latest.get("/vla_controller/attention/grids")
    assert (grid.rows, grid.cols, len(grid.values)) == (12, 16, 192)
    assert grid.method == "occlusion" and grid.camera_name in sc.CAMERA_NAMES

    pred = latest.get("/vla_controller/predicted_joint_states")
    assert pred is not None and list(pred.name) == sc.JOINT_NAMES and len(pred.position) == 6

    # Run-time changes through the parameter services, validated.
    assert set_param(peers.node, "attention_threshold", 0.6).successful
    assert set_param(peers.node, "explanation_method", "policy_attention").successful
    refused = set_param(peers.node, "activation_alpha", 1.5)
    assert not refused.successful and "[0, 1]" in refused.reason
    refused = set_param(peers.node, "control_rate_hz", 10.0)
    assert not refused.successful and "restart" in refused.reason

    def switched():
        t, g = latest.get("/vla_controller/attention/tokens"), latest.get("/vla_controller/attention/grids")
        return t.threshold == np.float32(0.6) and g.method == "policy_attention"
    wait_for(switched, 30, "explanations with the new settings")
    g = latest.get("/vla_controller/attention/grids")
    assert abs(sum(g.values) - 1.0) < 1e-3, "policy attention maps are distributions"

    # Token weights by occlusion instead of the policy's own: what the chunk depends on.
    own = np.array(latest.get("/vla_controller/attention/tokens").weights)
    assert set_param(peers.node, "token_weight_method", "occlusion").successful
    wait_for(lambda: latest.get("/vla_controller/attention/tokens").method == "occlusion", 30, "token occlusion")
    t = latest.get("/vla_controller/attention/tokens")
    assert len(t.weights) == len(own) and abs(sum(t.weights) - 1.0) < 1e-3
    assert np.abs(np.array(t.weights) - own).max() > 0.01, "occlusion measures something else than attention"


def test_rviz_config_shows_what_the_node_publishes(peers, start_node):
    import yaml
    from vla_demo.node_process import ROOT

    cfg = yaml.safe_load((ROOT / "rviz" / "vla_controller.rviz").read_text())
    shown = [d["Topic"]["Value"] for d in cfg["Visualization Manager"]["Displays"] if d["Enabled"]]
    assert len(shown) == 4
    peers.start()
    start_node()

    def published():
        topics = dict(peers.node.get_topic_names_and_types())
        return all(topics.get(t) == ["sensor_msgs/msg/Image"] for t in shown)
    wait_for(published, 60, f"the node advertising {shown}")
