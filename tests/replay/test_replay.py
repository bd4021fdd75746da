"""`vla_controller replay` and `compare` on recordings written by the independent
`rosbags` library (MCAP and sqlite3), read back by `rosbags` too."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "vla_controller"

from vla_demo import bags  # noqa: E402
from vla_demo import scene as sc  # noqa: E402

SCENE = sc.sample_scene(np.random.default_rng(2026), 4)
INSTRUCTIONS = [(0.0, "move above the red block"), (1.0, "抓起蓝色圆柱体")]
# Fast explanations keep the tests short; occlusion is covered by tests/explain.
FAST = ["-p", "explanation_method:=policy_attention"]


def replay(inp: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "replay", str(inp), "-o", str(out), "--quiet", *FAST, *args],
                          cwd=ROOT, capture_output=True, text=True)


def accounting(out: Path) -> dict:
    return json.loads((out / "accounting.json").read_text())


def commands(bag: Path) -> list[tuple[int, list[float]]]:
    with AnyReader([bag], default_typestore=bags.TYPESTORE) as r:
        conns = [c for c in r.connections if c.topic == "/joint_commands"]
        return [(t, list(r.deserialize(raw, c.msgtype).data)) for c, t, raw in r.messages(connections=conns)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("bags")
    messages = bags.scene_messages(SCENE, INSTRUCTIONS, seconds=2.0)
    return {"mcap": bags.write_bag(d / "mcap", messages, "mcap"),
            "sqlite3": bags.write_bag(d / "sqlite3", messages, "sqlite3"),
            "messages": messages}


@pytest.fixture(scope="module")
def first_output(recording, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "run1"
    r = replay(recording["mcap"], out, "--save-pngs", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r


def test_replay_accounts_for_every_message(recording, first_output):
    out, r = first_output
    acc = accounting(out)
    written = {}
    for _, topic, _, _ in recording["messages"]:
        written[topic] = written.get(topic, 0) + 1
    assert acc["read"] == written
    for topic, n in acc["received"].items():
        dropped = sum(acc["dropped"].get(topic, {}).values())
        rejected = sum(acc["rejected"].get(topic, {}).values())
        assert acc["used"].get(topic, 0) + dropped + rejected == n, topic
    # 60 frames per camera: every set is complete and inferred (the inter-message bound
    # lets the last one out without a later frame).
    assert acc["synchronized_sets"] == acc["inferences"] == 60
    # 50 Hz over the 2 s of recording, from the first chunk on.
    assert 90 <= acc["commands"] <= 100
    assert acc["errors"] == []
    assert "synchronized sets 60, inferences 60" in r.stdout
    assert (out / "accounting.txt").read_text() == r.stdout


def test_output_is_a_rosbag2_that_rosbags_reads(first_output):
    out, _ = first_output
    assert (out / "metadata.yaml").is_file()
    with AnyReader([out], default_typestore=bags.TYPESTORE) as r:
        topics = {c.topic: c.msgtype for c in r.connections}
        assert topics["/joint_commands"] == "std_msgs/msg/Float64MultiArray"
        assert topics["/vla_controller/attention/main"] == "sensor_msgs/msg/Image"
        assert topics["/vla_controller/attention/tokens"] == "vla_controller_msgs/msg/TokenAttention"
        assert topics["/vla_controller/attention/grids"] == "vla_controller_msgs/msg/ActivationGrid"
        assert topics["/diagnostics"] == "diagnostic_msgs/msg/DiagnosticArray"
        for c, t, raw in r.messages(connections=[c for c in r.connections if c.topic == "/vla_controller/attention/tokens"]):
            m = r.deserialize(raw, c.msgtype)
            assert m.instruction in {text for _, text in INSTRUCTIONS}
            assert abs(float(np.sum(m.weights)) - 1.0) < 1e-3
        # Stamped in bag time.
        assert bags.T0 <= r.start_time and r.end_time <= bags.T0 + 3 * 10**9
    cmds = commands(out)
    assert all(len(c) == 6 and np.all(np.isfinite(c)) for _, c in cmds)
    # Two instructions: the commands head somewhere else after the second.
    assert np.abs(np.array(cmds[-1][1]) - np.array(cmds[40][1])).max() > 0.1
    assert sorted(p.name for p in (out / "explanations").iterdir())[:2] == ["000_language.png", "000_main.png"]


def test_same_bag_same_commands_and_sqlite3_equals_mcap(recording, first_output, tmp_path):
    out, _ = first_output
    again = tmp_path / "run2"
    r = replay(recording["mcap"], again, "--compare", str(out), "--tolerance", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "within tolerance" in r.stdout
    assert commands(again) == commands(out)
    db3 = tmp_path / "from_db3"
    r = replay(recording["sqlite3"], db3)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(BIN), "compare", str(db3), str(out), "--tolerance", "0"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "within tolerance" in r.stdout, r.stdout


def test_compare_reports_a_regression(recording, first_output, tmp_path):
    out, _ = first_output
    changed = tmp_path / "changed"
    r = replay(recording["mcap"], changed, "-p", "smoothing:=none", "--compare", str(out), "--tolerance", "1e-3")
    assert r.returncode != 0
    assert "DIVERGES: first at stamp" in r.stdout
    assert "joint 0: max deviation" in r.stdout


def test_remapped_topics(tmp_path):
    messages = [(t, topic.replace("/camera/main/", "/robot/front/"), ty, d)
                for t, topic, ty, d in bags.scene_messages(SCENE, INSTRUCTIONS[:1], seconds=1.0)]
    bag = bags.write_bag(tmp_path / "remap", messages)
    r = replay(bag, tmp_path / "out", "--remap", "/robot/front/image_raw:=/camera/main/image_raw")
    assert r.returncode == 0, r.stdout + r.stderr
    assert accounting(tmp_path / "out")["inferences"] > 20
    r = replay(bag, tmp_path / "out2")
    assert r.returncode != 0 and "no messages on /camera/main/image_raw" in r.stdout
    assert accounting(tmp_path / "out2")["not_inputs"] == {"/robot/front/image_raw": 30}


def test_bad_messages_are_rejected_with_reasons_and_counted(tmp_path):
    t0 = bags.T0
    messages = bags.scene_messages(SCENE, INSTRUCTIONS[:1], seconds=1.0)
    rng = np.random.default_rng(1)
    yuv = bags.image_cdr(np.zeros((480, 640, 3), np.uint8), t0 + 400_000_000, "camera_main", "yuv422")
    messages += [
        (t0 + 300_000_000, "/joint_states", bags.JOINT_STATE, rng.integers(0, 256, 40, dtype=np.uint8).tobytes()),
        (t0 + 310_000_000, "/camera/side/image_raw", bags.IMAGE, b"\x00\x01\x00\x00" + b"\xff" * 30),
        # Padding bits (byte 3) beyond the payload: rmw's Fast CDR read past the buffer
        # and the replay died of a segfault (found by fuzzing).
        (t0 + 320_000_000, "/joint_states", bags.JOINT_STATE, b"\x00\x01\x00\x02"),
        (t0 + 330_000_000, "/instruction", bags.STRING, b"\x00\x01\x00\x03"),
        (t0 + 400_000_000, "/camera/main/image_raw", bags.IMAGE, yuv),
        (t0 + 500_000_000, "/instruction", bags.JOINT_STATE, bags.joint_state_cdr(np.zeros(6), t0)),
    ]
    messages.sort(key=lambda m: m[0])
    bag = bags.write_bag(tmp_path / "bad", messages)
    r = replay(bag, tmp_path / "out")
    assert r.returncode == 0, r.stdout + r.stderr
    rej = accounting(tmp_path / "out")["rejected"]
    assert rej["joint_states"] == {"message does not deserialize": 2}
    assert rej["camera/side/image_raw"] == {"message does not deserialize": 1}
    assert rej["camera/main/image_raw"] == {"unsupported encoding": 1}
    assert rej["instruction"] == {"wrong message type": 1, "message does not deserialize": 1}


def test_truncated_and_corrupt_bags_fail_clearly_after_replaying_what_was_readable(recording, tmp_path):
    # MCAP cut in the middle.
    cut = tmp_path / "cut"
    shutil.copytree(recording["mcap"], cut)
    f = next(cut.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size * 6 // 10])
    r = replay(cut, tmp_path / "out_cut")
    assert r.returncode != 0
    assert f"ERROR: bag `{f}`: damaged MCAP data" in r.stdout, r.stdout
    acc = accounting(tmp_path / "out_cut")
    assert 0 < acc["read"]["/camera/main/image_raw"] < 60 and acc["commands"] > 0
    # sqlite3 with its pages overwritten in the middle.
    bad = tmp_path / "bad_db3"
    shutil.copytree(recording["sqlite3"], bad)
    f = next(bad.glob("*.db3"))
    data = bytearray(f.read_bytes())
    data[len(data) // 2: len(data) // 2 + 65536] = b"\xa5" * 65536
    f.write_bytes(bytes(data))
    r = replay(bad, tmp_path / "out_db3")
    assert r.returncode != 0
    assert f"bag `{f}`" in r.stdout + r.stderr, r.stdout + r.stderr
    # Not a bag at all.
    r = replay(tmp_path / "nothing", tmp_path / "out_none")
    assert r.returncode != 0 and "no such file or folder" in r.stderr


def test_missing_topic_is_an_error_but_the_rest_is_replayed(tmp_path):
    messages = [m for m in bags.scene_messages(SCENE, INSTRUCTIONS[:1], seconds=1.0) if "top" not in m[1]]
    bag = bags.write_bag(tmp_path / "no_top", messages)
    r = replay(bag, tmp_path / "out")
    assert r.returncode != 0
    assert "no messages on /camera/top/image_raw (sensor_msgs/msg/Image)" in r.stdout
    acc = accounting(tmp_path / "out")
    assert acc["synchronized_sets"] == 0 and acc["read"]["/camera/main/image_raw"] == 30
