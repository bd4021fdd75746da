"""rosbag2 recordings of synthetic scenes, written with the independent `rosbags`
library: what a robot would record (three cameras, joint_states, instruction), for the
replay's tests, its demo and the live player.

    write_scene_bag(path, scene, [(0.0, "move above the red block")], seconds=3.0)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from . import scene as sc

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
IMAGE = "sensor_msgs/msg/Image"
JOINT_STATE = "sensor_msgs/msg/JointState"
STRING = "std_msgs/msg/String"
START = np.array([0.0, 1.2, -1.8, -0.9, 0.0, 0.04])
#: 2023-11-14 22:13:20 UTC: recordings carry wall-clock stamps.
T0 = 1_700_000_000 * 10**9


def _types():
    t = TYPESTORE.types
    return t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"], t[IMAGE], t[JOINT_STATE], t[STRING]


def image_cdr(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "rgb8") -> bytes:
    Time, Header, Image, _, _ = _types()
    h, w = rgb.shape[:2]
    channels = 1 if encoding == "mono8" else 3
    data = np.ascontiguousarray(rgb).reshape(-1)
    msg = Image(header=Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id),
                height=h, width=w, encoding=encoding, is_bigendian=0, step=w * channels, data=data)
    return bytes(TYPESTORE.serialize_cdr(msg, IMAGE))


def joint_state_cdr(q, stamp_ns: int, names=None) -> bytes:
    Time, Header, _, JointState, _ = _types()
    names = list(names or sc.JOINT_NAMES)
    msg = JointState(header=Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=""),
                     name=names, position=np.asarray(q, dtype=np.float64),
                     velocity=np.zeros(0), effort=np.zeros(0))
    return bytes(TYPESTORE.serialize_cdr(msg, JOINT_STATE))


def string_cdr(text: str) -> bytes:
    *_, String = _types()
    return bytes(TYPESTORE.serialize_cdr(String(data=text), STRING))


def scene_messages(scene: sc.Scene, instructions, seconds: float, q=START, camera_rate: float = 30.0,
                   joint_rate: float = 100.0, jitter_s: float = 0.004, seed: int = 0, t0: int = T0,
                   cameras=sc.CAMERA_NAMES):
    """(receive time, topic, type, CDR bytes) of a recording, in time order: each camera
    at `camera_rate` with jittered stamps (received 2-6 ms after its stamp), joint_states
    at `joint_rate`, and each instruction at its offset in seconds."""
    rng = np.random.default_rng(seed)
    renders = {c: sc.render(scene, c) for c in cameras}
    out = []
    for k in range(int(seconds * camera_rate)):
        nominal = t0 + int(k * 1e9 / camera_rate)
        for c in cameras:
            stamp = nominal + int(rng.integers(-int(jitter_s * 1e9), int(jitter_s * 1e9) + 1))
            recv = stamp + int(rng.integers(2_000_000, 6_000_000))
            out.append((recv, f"/camera/{c}/image_raw", IMAGE, image_cdr(renders[c], stamp, f"camera_{c}")))
    for k in range(int(seconds * joint_rate)):
        stamp = t0 + int(k * 1e9 / joint_rate)
        out.append((stamp + 500_000, "/joint_states", JOINT_STATE, joint_state_cdr(q, stamp)))
    for offset, text in instructions:
        out.append((t0 + int(offset * 1e9), "/instruction", STRING, string_cdr(text)))
    out.sort(key=lambda m: m[0])
    return out


def write_bag(path: Path, messages, storage: str = "mcap") -> Path:
    """Writes (time, topic, type, CDR) messages as a rosbag2 folder."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(Path(path), version=9, storage_plugin=plugin) as w:
        conns = {}
        for t, topic, msgtype, data in messages:
            # One connection per topic and type: a topic recorded with two types (a
            # misconfigured robot) stays two connections, as rosbag2 records it.
            if (topic, msgtype) not in conns:
                conns[topic, msgtype] = w.add_connection(topic, msgtype, typestore=TYPESTORE)
            w.write(conns[topic, msgtype], t, data)
    return Path(path)


def write_scene_bag(path: Path, scene: sc.Scene, instructions, seconds: float = 3.0, storage: str = "mcap",
                    **kw) -> Path:
    return write_bag(path, scene_messages(scene, instructions, seconds, **kw), storage)
