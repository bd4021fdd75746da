"""Plays a rosbag2 recording into a live ROS 2 graph with /clock, like `ros2 bag play
--clock` (which PyPI's ROS 2 does not have): every message at its recorded time, as
recorded (CDR bytes, no conversion), and rosgraph_msgs/Clock with the recording's time.

    python -m vla_demo.player BAG [--rate 1.0] [--loop] [--clock-hz 100]

A node started with use_sim_time:=true then lives in the recording's time.
"""

from __future__ import annotations

import argparse
import importlib
import threading
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosgraph_msgs.msg import Clock

from .ros_peers import LATCHED


def message_class(type_name: str):
    pkg, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class BagPlayer:
    def __init__(self, node: Node, bag: Path, rate: float = 1.0, clock_hz: float = 100.0, loop: bool = False):
        self.node, self.bag, self.rate, self.loop = node, Path(bag), rate, loop
        self.clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.clock_period = 1.0 / clock_hz
        self.pubs = {}
        self.published = 0
        self.loops = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def _publisher(self, topic: str, type_name: str):
        if topic not in self.pubs:
            qos = LATCHED if type_name == "std_msgs/msg/String" else QoSProfile(depth=10, durability=DurabilityPolicy.VOLATILE)
            self.pubs[topic] = self.node.create_publisher(message_class(type_name), topic, qos)
        return self.pubs[topic]

    def start(self) -> "BagPlayer":
        self.thread.start()
        return self

    def _clock(self, bag_ns: int) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = bag_ns // 10**9, bag_ns % 10**9
        self.clock_pub.publish(msg)

    def run(self) -> None:
        while not self.stop.is_set():
            with AnyReader([self.bag]) as reader:
                start_wall, start_bag, next_clock = time.monotonic(), None, 0.0
                for conn, t, raw in reader.messages():
                    if self.stop.is_set():
                        return
                    if start_bag is None:
                        start_bag = t
                    due = start_wall + (t - start_bag) / 1e9 / self.rate
                    while True:
                        now = time.monotonic()
                        if now >= next_clock:
                            bag_now = start_bag + int((now - start_wall) * self.rate * 1e9)
                            self._clock(min(bag_now, t))
                            next_clock = now + self.clock_period
                        if now >= due:
                            break
                        time.sleep(min(due - now, next_clock - now, 0.005))
                    self._publisher(conn.topic, conn.msgtype).publish(bytes(raw))
                    self.published += 1
            self.loops += 1
            if not self.loop:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", type=Path)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--clock-hz", type=float, default=100.0)
    ap.add_argument("--loop", action="store_true")
    args = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("vla_bag_player")
    player = BagPlayer(node, args.bag, args.rate, args.clock_hz, args.loop).start()
    try:
        while player.thread.is_alive():
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    player.close()
    print(f"published {player.published} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
