"""`vla_baseline_node.py replay BAG -o OUT`: a rosbag2 recording through the baseline's
pipeline on the recording's clock, as fast as it goes, like `vla_controller replay`:
every camera set is inferred, each chunk applies at the time of its inputs, and control
ticks run at the control rate from the first message on. The commands go to OUT, a
rosbag2 MCAP bag (/joint_commands, std_msgs/Float64MultiArray, stamped in recording
time) that `vla_controller compare` reads, with accounting.json beside them.

Images are read from their serialized bytes by the same code as the live baseline.

    python benches/baseline/vla_baseline_node.py replay BAG -o OUT [--params-file F] [-p name:=value]
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from pathlib import Path

import numpy as np
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from pipeline import INSTRUCTION_TOPIC, JOINT_STATES_TOPIC, ImageDecoder, ImageRejected, Pipeline, Stats, camera_topic
from vla_baseline_node import PARAMS, CameraImage, PolicyRunner, load_policy, parse_image_cdr

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
ROOT = Path(__file__).resolve().parents[2]


def load_params(params_file: Path, overrides: list[str]) -> dict:
    """The node's parameters from a ROS 2 parameters file (`/**` and `vla_controller`
    sections) and `name:=value` overrides, over the defaults."""
    p = dict(PARAMS)
    doc = yaml.safe_load(params_file.read_text()) or {}
    for key in ("/**", "vla_controller", "/vla_controller"):
        p.update((doc.get(key) or {}).get("ros__parameters", {}))
    for o in overrides:
        name, sep, value = o.partition(":=")
        if not sep:
            raise SystemExit(f"-p {o}: expected name:=value")
        p[name] = yaml.safe_load(value)
    return p


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vla_baseline_node.py replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("input", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--params-file", type=Path, default=ROOT / "config" / "controller.yaml")
    ap.add_argument("-p", "--param", action="append", default=[])
    args = ap.parse_args(argv)
    p = load_params(args.params_file, args.param)
    policy, meta = load_policy(p)
    runner = PolicyRunner(policy, meta, p["device"])
    stats = Stats()
    pipe = Pipeline(p, meta, stats)
    decoder = ImageDecoder(p["image_width"], p["image_height"], meta["image_width"], meta["image_height"])
    cameras = {f"/{camera_topic(c)}": i for i, c in enumerate(p["camera_names"])}
    commands: list[tuple[int, list[float]]] = []
    next_tick = None

    def ticks_until(t: int) -> None:
        nonlocal next_tick
        tick = t if next_tick is None else next_tick
        while tick <= t:
            out = pipe.tick(tick)
            if out.command is not None and not p["dry_run"]:
                commands.append((tick, out.command.tolist()))
            tick += pipe.period
        next_tick = tick

    wall = time.monotonic()
    now = None
    with AnyReader([args.input], default_typestore=TYPESTORE) as reader:
        for conn, t, raw in reader.messages():
            now = t if now is None else max(now, t)
            ticks_until(now)
            if conn.topic in cameras:
                i = cameras[conn.topic]
                try:
                    img = CameraImage(*parse_image_cdr(bytes(raw)))
                except (ValueError, struct.error, UnicodeDecodeError):
                    topic = conn.topic[1:]
                    stats.count(stats.received, topic)
                    stats.count(stats.rejected, (topic, "message does not deserialize"))
                    continue
                try:
                    decoded = decoder.decode(img.width, img.height, img.encoding, img.step, img.data)
                except ImageRejected as e:
                    decoded = e
                for obs in pipe.on_image(i, img.stamp, now, decoded, img):
                    try:
                        actions, _, _ = runner(obs.images, obs.state, obs.tokens)
                    except (RuntimeError, ValueError) as e:
                        stats.inference_errors += 1
                        pipe.on_policy_error(str(e))
                        continue
                    stats.inferences += 1
                    pipe.on_chunk(obs.stamp, obs.arrival, obs.instruction_seq, actions)
            elif conn.topic == f"/{JOINT_STATES_TOPIC}":
                m = reader.deserialize(raw, conn.msgtype)
                stamp = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
                pipe.on_joint_state(stamp, now, list(m.name), list(m.position))
            elif conn.topic == f"/{INSTRUCTION_TOPIC}":
                pipe.on_instruction(reader.deserialize(raw, conn.msgtype).data)
    pipe.drain("end of recording: no later message to complete its set")

    Float64MultiArray = TYPESTORE.types["std_msgs/msg/Float64MultiArray"]
    Layout = TYPESTORE.types["std_msgs/msg/MultiArrayLayout"]
    with Writer(args.output, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/joint_commands", "std_msgs/msg/Float64MultiArray", typestore=TYPESTORE)
        for t, cmd in commands:
            msg = Float64MultiArray(layout=Layout(dim=[], data_offset=0), data=np.array(cmd, np.float64))
            w.write(conn, t, TYPESTORE.serialize_cdr(msg, "std_msgs/msg/Float64MultiArray"))
    accounting = {
        "synchronized_sets": stats.observations, "inferences": stats.inferences,
        "inference_errors": stats.inference_errors, "commands": stats.commands, "hold_commands": stats.hold_commands,
        "received": stats.received, "used": stats.used,
        "dropped": {f"{t}/{r}": n for (t, r), n in stats.dropped.items()},
        "rejected": {f"{t}/{r}": n for (t, r), n in stats.rejected.items()},
        "wall_seconds": time.monotonic() - wall,
    }
    (args.output / "accounting.json").write_text(json.dumps(accounting, indent=2, ensure_ascii=False))
    print(f"synchronized sets {stats.observations}, inferences {stats.inferences} ({stats.inference_errors} failed), "
          f"commands {stats.commands} ({stats.hold_commands} holding) in {accounting['wall_seconds']:.1f} s")
    return 0
