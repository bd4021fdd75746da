"""The node's log lines go through rcl's logging, as an rclcpp or rclpy node's do: to
/rosout (read here by an rclpy subscriber, as rqt_console reads it) with the node's
logger name and the right severity, to the console, and to the log file; and the
`--log-level` arguments decide which lines are logged."""

from __future__ import annotations

import threading

from rcl_interfaces.msg import Log
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from vla_demo.node_process import wait_for
from vla_demo.ros_peers import wait_until_serving

DEBUG, INFO, WARN, ERROR = Log.DEBUG, Log.INFO, Log.WARN, Log.ERROR  # 10, 20, 30, 40


class Rosout:
    """Every /rosout message of one logger, in arrival order. Subscribed as rcl publishes
    /rosout (reliable, transient local), so that nothing the node logs is missed."""

    def __init__(self, peers, logger: str):
        self.logger, self.lines, self.lock = logger, [], threading.Lock()
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        peers.node.create_subscription(Log, "/rosout", self._on_log, qos)

    def _on_log(self, msg: Log) -> None:
        if msg.name == self.logger:
            with self.lock:
                self.lines.append(msg)

    def find(self, text: str) -> Log | None:
        with self.lock:
            return next((m for m in self.lines if text in m.msg), None)

    def levels(self) -> set[int]:
        with self.lock:
            return {m.level for m in self.lines}


def test_the_start_up_line_reaches_rosout_with_the_nodes_name_severity_and_place(peers, start_node, tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path))
    rosout = Rosout(peers, "arm1.vla_controller")
    peers.recorder.attach(peers.node)
    peers.start()
    node = start_node("-r", "__ns:=/arm1")
    line = wait_for(lambda: rosout.find("vla_controller running"), 60, "the start-up line on /rosout")
    # The logger is the node's fully qualified name in rcl's dotted form; the line names
    # the node as the graph knows it.
    assert "node=/arm1/vla_controller" in line.msg, line.msg
    assert line.level == INFO
    assert line.file.endswith("node.rs") and line.line > 0 and line.function == "vla_controller::ros::node"
    loaded = rosout.find("policy loaded and checked")
    assert loaded is not None and loaded.level == INFO
    # The console shows it in ROS's format, once (not also through the stderr printer).
    shown = [l for l in node.output().splitlines() if "vla_controller running" in l]
    assert len(shown) == 1 and shown[0].startswith("[INFO] [") and "[arm1.vla_controller]: " in shown[0], shown
    wait_until_serving(peers)
    assert node.stop() == 0
    # And the log file a robot keeps has it as well.
    logs = [p.read_text(errors="replace") for p in tmp_path.glob("*.log")]
    assert any("vla_controller running" in text for text in logs), list(tmp_path.iterdir())


def test_a_warning_on_rosout_is_a_warning(peers, start_node):
    rosout = Rosout(peers, "vla_controller")
    peers.start()
    start_node("-p", "dry_run:=true")
    line = wait_for(lambda: rosout.find("dry_run"), 60, "the dry_run warning")
    assert line.level == WARN


def test_debug_lines_appear_only_at_the_debug_level(peers, start_node):
    rosout = Rosout(peers, "vla_controller")
    peers.start()
    peers.recorder.attach(peers.node)
    default = start_node()
    wait_for(lambda: rosout.find("vla_controller running"), 60, "the start-up line")
    wait_until_serving(peers)
    # The first debug line of a start-up comes right after it (with real-time priorities
    # on, the default); "shutting down" comes after that, and the console is complete
    # once the node has exited.
    assert default.stop() == 0
    assert "shutting down" in default.output()
    assert not any(l.startswith("[DEBUG]") for l in default.output().splitlines()), default.output()
    assert DEBUG not in rosout.levels()

    with peers.recorder.lock:
        peers.recorder.diagnostics.clear()
    debug = start_node("--log-level", "debug")
    line = wait_for(lambda: rosout.find("middleware reception threads"), 60, "a debug line on /rosout")
    assert line.level == DEBUG
    wait_until_serving(peers)
    assert debug.stop() == 0
    assert any(l.startswith("[DEBUG]") and "[vla_controller]: " in l for l in debug.output().splitlines())


def test_a_level_for_the_nodes_logger_leaves_only_what_is_at_or_above_it(peers, start_node):
    rosout = Rosout(peers, "vla_controller")
    peers.recorder.attach(peers.node)
    peers.start()
    node = start_node("--log-level", "vla_controller:=warn", "-p", "dry_run:=true")
    warning = wait_for(lambda: rosout.find("dry_run"), 60, "the dry_run warning")
    assert warning.level == WARN
    # "policy loaded and checked" (info) is logged before the warning, and /rosout is
    # reliable and in order: had it been logged, it would be here by now.
    assert rosout.find("policy loaded and checked") is None
    assert rosout.levels() <= {WARN, ERROR}
    wait_until_serving(peers)
    assert node.stop() == 0
    out = node.output()
    assert "dry_run" in out and "policy loaded and checked" not in out and "vla_controller running" not in out, out
