"""Writes the committed seed inputs of the fuzz targets that read files and messages
(fuzz/seeds/bag, fuzz/seeds/cdr, fuzz/seeds/params) with the project's own generator
(`vla_demo.bags`, on the `rosbags` library): small but valid recordings and messages,
which the fuzzer then mutates; and the params target's dictionary (every parameter name
and the YAML words around them, fuzz/dicts/params.dict). The other targets' seeds are
minimized corpora of short runs (scripts/fuzz.sh --minimize).

    source scripts/env.sh && python fuzz/make_seeds.py

Run it again only to change the seeds; the files are committed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from vla_demo import bags

SEEDS = Path(__file__).resolve().parent / "seeds"
ROOT = SEEDS.parents[1]


def small_recording(seconds: float = 0.2):
    """Three 8x6 cameras at 30 Hz, joint states at 100 Hz and two instructions (one in
    Chinese): every input topic of the node in a few kilobytes."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(int(seconds * 30)):
        stamp = bags.T0 + k * 33_333_333
        for c, name in enumerate(("main", "side", "top")):
            rgb = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
            encoding = ("rgb8", "bgr8", "rgb8")[c]
            out.append((stamp + 3_000_000, f"/camera/{name}/image_raw", bags.IMAGE,
                        bags.image_cdr(rgb, stamp + c * 1_000_000, f"camera_{name}", encoding)))
    for k in range(int(seconds * 100)):
        stamp = bags.T0 + k * 10_000_000
        out.append((stamp + 500_000, "/joint_states", bags.JOINT_STATE, bags.joint_state_cdr(bags.START, stamp)))
    out.append((bags.T0, "/instruction", bags.STRING, bags.string_cdr("move above the red block")))
    out.append((bags.T0 + 100_000_000, "/instruction", bags.STRING, bags.string_cdr("移动到红色方块正上方")))
    out.sort(key=lambda m: m[0])
    return out


def write_bag_seeds() -> None:
    d = SEEDS / "bag"
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for storage, name in (("mcap", "small.mcap"), ("sqlite3", "small.db3")):
            folder = bags.write_bag(Path(tmp) / storage, small_recording(), storage)
            (storage_file,) = [p for p in folder.iterdir() if p.suffix in (".mcap", ".db3")]
            shutil.copy(storage_file, d / name)
            if storage == "mcap":
                text = (folder / "metadata.yaml").read_text().replace(storage_file.name, "b_0.mcap")
                (d / "metadata.yaml").write_text(text)


def write_cdr_seeds() -> None:
    """Each message type's seed starts with the byte that selects it in the target."""
    d = SEEDS / "cdr"
    d.mkdir(parents=True, exist_ok=True)
    rgb = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    clock_type = bags.TYPESTORE.types["rosgraph_msgs/msg/Clock"]
    time_type = bags.TYPESTORE.types["builtin_interfaces/msg/Time"]
    clock = bytes(bags.TYPESTORE.serialize_cdr(clock_type(clock=time_type(sec=1_700_000_000, nanosec=5)),
                                               "rosgraph_msgs/msg/Clock"))
    seeds = {
        "image_rgb8": b"\x00" + bags.image_cdr(rgb, bags.T0, "camera_main"),
        "image_mono8": b"\x00" + bags.image_cdr(rgb[:, :, 0], bags.T0, "camera_top", "mono8"),
        "joint_state": b"\x01" + bags.joint_state_cdr(bags.START, bags.T0),
        "joint_state_extra": b"\x01" + bags.joint_state_cdr(list(bags.START) + [0.5], bags.T0,
                                                           names=list(bags.sc.JOINT_NAMES) + ["camera_tilt"]),
        "string_en": b"\x02" + bags.string_cdr("move above the red block"),
        "string_zh": b"\x02" + bags.string_cdr("抓起蓝色圆柱体"),
        "clock": b"\x03" + clock,
    }
    for name, data in seeds.items():
        (d / name).write_bytes(data)


def write_params_seeds() -> None:
    d = SEEDS / "params"
    d.mkdir(parents=True, exist_ok=True)
    shipped = (ROOT / "config" / "controller.yaml").read_text()
    (d / "controller.yaml").write_text(shipped)
    (d / "overrides").write_text(
        "/**:\n  ros__parameters:\n    camera_names: [main]\n"
        "\n---overrides\n"
        "smoothing:=exponential\nexponential_alpha:=0.25\ncontrol_rate_hz:=100\n"
        "joint_names:=[a, b]\njoint_lower_limits:=[-1, 0]\njoint_upper_limits:=[1, 2.5]\n"
        "max_step_per_tick:=[0.1, 0.05]\ncommand_type:=joint_trajectory\n")
    (d / "one_camera_one_joint").write_text(
        "vla_controller:\n  ros__parameters:\n    camera_names: [wrist]\n    joint_names: [gripper]\n"
        "    joint_lower_limits: [0.0]\n    joint_upper_limits: [0.08]\n    max_step_per_tick: [0.01]\n"
        "    smoothing: none\n    sync_queue_size: 1\n    image_width: 16\n    image_height: 12\n")


def write_params_dict() -> None:
    import yaml

    names = yaml.safe_load((ROOT / "config" / "controller.yaml").read_text())["/**"]["ros__parameters"]
    words = [*names, "/**", "vla_controller", "/vla_controller", "ros__parameters", ":=", "---overrides", "[", "]",
             "true", "false", "null", ".inf", "-.inf", ".nan", "1e308", "-0.0", "0x7fffffffffffffff", "~", "!!binary",
             "temporal_ensemble", "exponential", "none", "joint_trajectory", "float64_multi_array",
             "occlusion", "policy_attention", "cuda:1"]
    d = SEEDS.parent / "dicts"
    d.mkdir(exist_ok=True)
    (d / "params.dict").write_text("".join(f'"{w}"\n' for w in words))


if __name__ == "__main__":
    write_params_dict()
    write_bag_seeds()
    write_cdr_seeds()
    write_params_seeds()
    for p in sorted(SEEDS.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(ROOT)}: {p.stat().st_size} bytes")
