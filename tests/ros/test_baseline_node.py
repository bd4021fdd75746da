"""The benchmarks' Python baseline (benches/baseline/vla_baseline_node.py) as a live node
on a real ROS 2 graph: it drives the simulated arm to the instructed item and publishes
every topic benches/e2e.py reads from the Rust node (commands, timing, diagnostics with
counters by reason, explanations), so the benchmark compares like with like."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vla_controller_msgs.msg import InferenceTiming

from vla_demo.node_process import PARAMS, ROOT, wait_for
from vla_demo.ros_peers import CONTROL_RATE, instruction, setup_graph, status, two_sided_scene, xy_error

BASELINE = ROOT / "benches" / "baseline" / "vla_baseline_node.py"


def test_baseline_node_drives_the_arm_and_publishes_what_the_benchmark_reads(peers):
    s, left, _ = two_sided_scene()
    got: dict[str, list] = {"chunk": [], "command": [], "main": [], "language": []}
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    peers.node.create_subscription(InferenceTiming, "/vla_controller/timing/chunk", got["chunk"].append, qos)
    peers.node.create_subscription(Header, "/vla_controller/timing/command", got["command"].append, qos)
    for k in ("main", "language"):
        peers.node.create_subscription(Image, f"/vla_controller/attention/{k}", got[k].append, QoSProfile(depth=5))
    cams, arm = setup_graph(peers, s, instruction(s, left))
    log = tempfile.NamedTemporaryFile(prefix="vla_baseline-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, str(BASELINE), "--ros-args", "--params-file", str(PARAMS),
                             "-p", f"policy_path:={ROOT / 'policy' / 'demo_policy.pt'}",
                             "-p", "explanation_method:=policy_attention"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(peers.recorder.commands) > 0, 60, "the first command")
        wait_for(lambda: xy_error(arm.position(), s, left) < 0.06, 20, "the arm over the instructed item")
        t0 = time.monotonic()
        time.sleep(2.0)
        window = peers.recorder.commands_since(t0)
        assert 0.8 * CONTROL_RATE <= len(window) / 2.0 <= 1.2 * CONTROL_RATE
        assert status(peers)[0] == 0, status(peers)
        counters = {kv.key: kv.value for kv in peers.recorder.last_status().values}
        assert int(counters["used/camera/main/image_raw"]) > 0 and int(counters["inferences"]) > 0
        assert "observations_superseded" in counters
        assert got["chunk"] and got["command"], "timing topics"
        ns = lambda t: t.sec * 10**9 + t.nanosec  # noqa: E731
        m = got["chunk"][-1]
        stages = [ns(m.received), ns(m.queued), ns(m.started), ns(m.finished)]
        assert stages == sorted(stages)
        wait_for(lambda: got["main"] and got["language"], 5, "explanation images")
        overlay = got["main"][-1]
        assert (overlay.width, overlay.height, overlay.encoding) == (640, 480, "rgb8")
        assert np.frombuffer(bytes(overlay.data), np.uint8).std() > 10
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(Path(log.name).read_text()[-3000:])
