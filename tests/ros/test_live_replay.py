"""Live replay: a recording played into the graph with /clock (the project's player, as
`ros2 bag play --clock` would), and the node running on it with use_sim_time."""

from __future__ import annotations

import numpy as np

from vla_demo.node_process import wait_for
from vla_demo.ros_peers import status
from vla_demo import bags
from vla_demo import scene as sc
from vla_demo.player import BagPlayer


def stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def test_node_follows_the_recording_clock(peers, start_node, tmp_path):
    s = sc.sample_scene(np.random.default_rng(2026), 4)
    bag = bags.write_scene_bag(tmp_path / "bag", s, [(0.0, "move above the red block")], seconds=3.0)
    peers.recorder.attach(peers.node)
    player = BagPlayer(peers.node, bag, loop=True)
    peers.start()
    player.start()
    try:
        start_node("-p", "use_sim_time:=true")
        wait_for(lambda: status(peers) and status(peers)[1] == "running", 60, "the node running on the recording")
        wait_for(lambda: len(peers.recorder.commands) > 25, 10, "commands")
        # Its clock is the recording's: diagnostics are stamped in recording time.
        last = peers.recorder.diagnostics[-1][1]
        assert bags.T0 <= stamp_ns(last.header) <= bags.T0 + 4 * 10**9
        # The recording loops: time jumps back, the node resets, holds, and runs again.
        wait_for(lambda: player.loops >= 1, 10, "the recording to loop")
        wait_for(lambda: any("clock jumped backwards" in d.status[0].message for _, d in peers.recorder.diagnostics), 5,
                 "the clock jump reported")
        wait_for(lambda: status(peers)[1] == "running", 10, "running again after the jump")
    finally:
        player.close()
