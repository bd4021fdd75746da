"""The placement diagnosis through the node (`vla_demo.diagnose`, `vla_controller inspect`):
policy A (right-side placements held to 2% of its training) against B (A fine-tuned
with 300 added right-side demonstrations), on held-out scenes, each asked "right" and
"left". What the added data changed must show in what the node reports: B puts the item
on the right side more often, and the word "right" weighs more in B's token occlusion.
The full figures (40 scenes, both languages, replay) are in policy/README.md."""

from __future__ import annotations

import json

import numpy as np

from vla_demo import diagnose

SCENES = 8


def test_added_right_side_data_shows_in_placements_and_in_the_side_word(tmp_path):
    result = diagnose.measure(diagnose.POLICIES, SCENES, tmp_path)
    a, b = (result["policies"][p.name] for p in diagnose.POLICIES)

    # The cases were explained by token occlusion, weights over the real tokens.
    out = json.loads((tmp_path / "p0" / "scene000" / "right" / "explanation.json").read_text())
    assert out["token_method"] == "occlusion"
    assert abs(sum(out["token_weights"]) - 1.0) < 1e-3
    assert len(out["policy_token_weights"]) == len(out["token_weights"])

    # Behaviour: both place on the left as told; B goes right more often than A.
    for p in (a, b):
        assert p["summary"]["left"]["side_accuracy"] >= 0.75, p["summary"]
    assert b["summary"]["right"]["side_accuracy"] > a["summary"]["right"]["side_accuracy"], (a["summary"], b["summary"])

    # Explanation: by token occlusion the English "right" weighs more in B than in A.
    def right_en(p):
        return np.mean([c["side_word_occlusion"] for c in p["cases"] if c["side"] == "right" and c["lang"] == "en"])
    assert right_en(b) > right_en(a) + 0.1, (right_en(a), right_en(b))
