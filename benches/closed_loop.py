"""`make bench-closed-loop`: smoothings against inference delay, in closed loop with the
simulated arm (python/vla_demo/ros_peers.py), on held-out scenes of the generator.

For each smoothing (none, temporal_ensemble, exponential, rtc) and each added inference
delay (0, 100, 200, 300 ms: the test-only parameter `test_added_inference_delay_s`, which
hands each chunk over that much later), the live node drives the arm towards the item an
instruction names, on the same held-out scenes. Once the arm is there, the instruction
changes to another item of the scene (as an operator redirects a running arm): the
arm must turn, and the delay now costs, since every chunk computed before the node saw
the change still heads for the first item. Measured per run:

- reached: the tool over the instructed item (within 3 cm in the table plane) before
  the time limit, and the time it took: from the node's first command, and from the
  camera set the first chunk was computed from (which counts the delay: the node skips
  a chunk's actions whose ticks have passed, so the first command is already along the
  plan);
- after the switch: the second item reached within the time limit, and the time from
  the new instruction's publication;
- joint jumps at chunk seams: the change of the executed plan (the node's
  `~/predicted_joint_states`, before the safety filter) from one control tick to the
  next, at each tick where a new chunk took over, over both legs; given as the median,
  the 95th percentile and the largest over all seams of all scenes. The seam where the
  new instruction's first chunk takes over (the largest after the switch) is counted
  apart (its median over scenes):
  every smoothing starts afresh there, and the plan jumps to where the new chunk is
  after the ticks its inference took (the safety filter's step limit then carries the
  arm there);
- RMS jerk of the commands (third differences over the control period, rad/s^3);
- the commanded path against the chunk plan: the mean distance between the plan the node
  executes and the newest chunk's own action for that tick (`~/chunk`): 0 when chunks run
  as they are, the cost of averaging plans otherwise.

The policy is the flow-matching demo policy (policy/flow_demo_policy.pt), so that every
smoothing runs the same policy and real-time chunking has a velocity field to guide.

    python benches/closed_loop.py [--policy policy/flow_demo_policy.pt] [--scenes 10]
        [--smoothings none,temporal_ensemble,exponential,rtc] [--delays 0,0.1,0.2,0.3]
        [--json target/bench-closed-loop.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(102, 200)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

from sensor_msgs.msg import JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla_demo import scene as sc  # noqa: E402
from vla_demo.node_process import FLOW_DEMO_POLICY, ROOT, NodeProcess, node_command, wait_for  # noqa: E402
from vla_demo.ros_peers import START, Peers, Recorder, ScenePublisher, SimArm, instruction, xy_error  # noqa: E402

REACH_M = 0.03
TIME_LIMIT_S = 8.0
PERIOD_S = 1 / 50.0


def ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Watch:
    """The executed plan and the chunks, in the order the peer received them."""

    def __init__(self, node):
        self.lock = threading.Lock()
        self.events: list[tuple[str, int, object]] = []
        node.create_subscription(JointState, "/vla_controller/predicted_joint_states", self._plan, 100)
        node.create_subscription(JointTrajectory, "/vla_controller/chunk", self._chunk, 100)

    def _plan(self, msg):
        with self.lock:
            self.events.append(("plan", ns(msg.header.stamp), np.array(msg.position)))

    def _chunk(self, msg):
        points = np.array([p.positions for p in msg.points])
        with self.lock:
            self.events.append(("chunk", ns(msg.header.stamp), points))

    def take(self):
        with self.lock:
            out, self.events = self.events, []
        return out


def measures(events, commands, period_ns: int, switch_ns: int | None) -> dict:
    """Seam jumps, the takeover jump at the switch, path against the newest chunk, RMS
    jerk, from one run's streams. One seam after `switch_ns` (wall clock) is the new
    instruction's first chunk taking over: every smoothing starts afresh there (chunks of
    a replaced instruction are discarded), so it is counted apart. Which one is not in
    the streams (a chunk of the old instruction can still arrive after the switch), so
    it is taken as the largest jump after the switch: the one where the plan turns."""
    chunk, deviations, seam_jumps, after_switch = None, [], [], []
    previous, new_chunk = None, False
    for kind, stamp, value in events:
        if kind == "chunk":
            chunk, new_chunk = (stamp, value), True
            continue
        if previous is not None:
            step = float(np.abs(value - previous).max())
            if new_chunk:
                (after_switch if switch_ns is not None and stamp > switch_ns else seam_jumps).append(step)
                new_chunk = False
        previous = value
        if chunk is not None:
            i = round((stamp - chunk[0]) / period_ns)
            if 0 <= i < len(chunk[1]):
                deviations.append(float(np.abs(value - chunk[1][i]).max()))
    takeover = max(after_switch, default=None)
    if after_switch:
        after_switch.remove(takeover)
        seam_jumps.extend(after_switch)
    q = np.array([c for _, c in commands])
    jerk = np.diff(q, n=3, axis=0) / PERIOD_S**3 if len(q) > 3 else np.zeros((0, 6))
    return {
        "seam_jumps": seam_jumps,
        "takeover_jump": takeover,
        "plan_vs_chunk": float(np.mean(deviations)) if deviations else 0.0,
        "rms_jerk": float(np.sqrt(np.mean(jerk**2))) if jerk.size else 0.0,
    }


def reach(peers, s: sc.Scene, item: int, t0: float):
    """Seconds from `t0` until the tool is over `item`, or None at the time limit; and
    the wall-clock time (ns) it got there."""
    while time.monotonic() - t0 < TIME_LIMIT_S:
        if xy_error(peers.arm.position(), s, item) < REACH_M:
            return time.monotonic() - t0, time.time_ns()
        time.sleep(0.02)
    return None, None


def run_scene(peers, watch, policy: Path, smoothing: str, delay: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    s = sc.sample_scene(rng, 4)
    item = int(rng.integers(0, len(s.items)))
    # The second item: the one farthest from the first in the table plane, so the turn
    # is a real one.
    second = max((j for j in range(len(s.items)) if j != item),
                 key=lambda j: np.hypot(s.items[j].x - s.items[item].x, s.items[j].y - s.items[item].y))
    text = instruction(s, item)
    peers.cams.set_scene(s)
    peers.arm.q[:] = START
    peers.recorder.commands.clear()
    watch.take()
    # Latched: the node reads it as it starts; the run's time counts from its first command.
    peers.cams.instruct(text)
    node = NodeProcess(node_command("-p", f"smoothing:={smoothing}", "-p", f"test_added_inference_delay_s:={delay}",
                                    "-p", "explanation_method:=policy_attention", "-p", "explain_rate_hz:=1.0",
                                    policy=policy), log=ROOT / "target" / "bench-closed-loop-node.log")
    try:
        wait_for(lambda: len(peers.recorder.commands) > 0 or node.poll() is not None, 60, "the first command")
        t0 = peers.recorder.commands[0][0] if peers.recorder.commands else time.monotonic()
        reached_at, reached_wall_ns = reach(peers, s, item, t0)
        switched_at, switch_ns = None, None
        if reached_at is not None:
            t1, switch_ns = time.monotonic(), time.time_ns()
            peers.cams.instruct(instruction(s, second))
            switched_at, _ = reach(peers, s, second, t1)
    finally:
        node.stop()
    commands = peers.recorder.commands_since(t0)
    events = watch.take()
    # From the camera set the first chunk was computed from (its stamp, on the same
    # system clock): unlike the time from the first command, this counts the delay.
    first_obs = next((stamp for kind, stamp, _ in events if kind == "chunk"), None)
    from_obs = (reached_wall_ns - first_obs) / 1e9 if reached_at is not None and first_obs else None
    return {"seed": seed, "reached": reached_at is not None, "time_to_reach": reached_at,
            "time_from_observation": from_obs, "switch_reached": switched_at is not None,
            "time_after_switch": switched_at, **measures(events, commands, int(PERIOD_S * 1e9), switch_ns)}


def summary(runs: list[dict]) -> dict:
    times = [r["time_to_reach"] for r in runs if r["reached"]]
    obs = [r["time_from_observation"] for r in runs if r["time_from_observation"] is not None]
    after = [r["time_after_switch"] for r in runs if r["switch_reached"]]
    seams = np.array([j for r in runs for j in r["seam_jumps"]])
    return {
        "reach_rate": sum(r["reached"] for r in runs) / len(runs),
        "time_to_reach_s": float(np.median(times)) if times else None,
        "time_from_observation_s": float(np.median(obs)) if obs else None,
        "switch_reach_rate": sum(r["switch_reached"] for r in runs) / len(runs),
        "time_after_switch_s": float(np.median(after)) if after else None,
        "seams": len(seams),
        "seam_jump_p50": float(np.median(seams)) if len(seams) else 0.0,
        "seam_jump_p95": float(np.percentile(seams, 95)) if len(seams) else 0.0,
        "seam_jump_max": float(seams.max()) if len(seams) else 0.0,
        "takeover_jump_median": float(np.median(t)) if (t := [r["takeover_jump"] for r in runs if r["takeover_jump"] is not None]) else None,
        "rms_jerk": float(np.mean([r["rms_jerk"] for r in runs])),
        "plan_vs_chunk": float(np.mean([r["plan_vs_chunk"] for r in runs])),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", type=Path, default=FLOW_DEMO_POLICY)
    ap.add_argument("--scenes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1000, help="first held-out scene seed")
    ap.add_argument("--smoothings", default="none,temporal_ensemble,exponential,rtc")
    ap.add_argument("--delays", default="0,0.1,0.2,0.3")
    ap.add_argument("--json", type=Path, default=ROOT / "target" / "bench-closed-loop.json")
    args = ap.parse_args()
    peers = Peers("closed_loop_peers")
    peers.cams = ScenePublisher(peers.node, sc.sample_scene(np.random.default_rng(0), 4))
    peers.arm = SimArm(peers.node, START)
    peers.recorder = Recorder()
    peers.recorder.attach(peers.node)
    watch = Watch(peers.node)
    peers.start()
    started = time.monotonic()
    print(f"{datetime.date.today()} on {platform.node()} ({os.cpu_count()} CPUs), load {os.getloadavg()[0]:.1f}; "
          f"policy {args.policy}, {args.scenes} held-out scenes from seed {args.seed}")
    table = {}
    for smoothing in args.smoothings.split(","):
        for delay in (float(d) for d in args.delays.split(",")):
            runs = [run_scene(peers, watch, args.policy, smoothing, delay, args.seed + k) for k in range(args.scenes)]
            table[f"{smoothing} {delay * 1000:.0f} ms"] = {"smoothing": smoothing, "delay_s": delay, **summary(runs), "runs": runs}
            r = table[f"{smoothing} {delay * 1000:.0f} ms"]
            print(f"  {smoothing:18s} +{delay * 1000:3.0f} ms: reach {r['reach_rate'] * 100:5.1f}%  "
                  f"time {r['time_to_reach_s'] or float('nan'):.2f} s  after switch {r['switch_reach_rate'] * 100:5.1f}% "
                  f"{r['time_after_switch_s'] or float('nan'):.2f} s  seam jump p50/p95/max {r['seam_jump_p50']:.3f}/"
                  f"{r['seam_jump_p95']:.3f}/{r['seam_jump_max']:.3f} rad  "
                  f"jerk {r['rms_jerk']:8.1f} rad/s^3  plan vs chunk {r['plan_vs_chunk']:.4f} rad", flush=True)
    peers.close()
    print("\n| smoothing | added delay | reach | time to reach (first command / observation) | after the switch: reach, time "
          "| seam jumps p50 / p95 / max (seams) | takeover jump | RMS jerk | plan vs chunk |\n|---|---|---|---|---|---|---|---|---|")
    for r in table.values():
        print(f"| {r['smoothing']} | {r['delay_s'] * 1000:.0f} ms | {r['reach_rate'] * 100:.0f}% | "
              f"{r['time_to_reach_s'] or float('nan'):.2f} / {r['time_from_observation_s'] or float('nan'):.2f} s | "
              f"{r['switch_reach_rate'] * 100:.0f}%, {r['time_after_switch_s'] or float('nan'):.2f} s | "
              f"{r['seam_jump_p50']:.3f} / {r['seam_jump_p95']:.3f} / {r['seam_jump_max']:.3f} rad ({r['seams']}) | "
              f"{r['takeover_jump_median'] or float('nan'):.3f} rad | "
              f"{r['rms_jerk']:.0f} rad/s^3 | {r['plan_vs_chunk']:.4f} rad |")
    print(f"\n{time.monotonic() - started:.0f} s in all")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(table, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
