"""Python half of the vla_controller demo: a synthetic three-camera tabletop
(`vla_demo.scene`), used to train, export and evaluate the small demo policy in
`policy/demo_policy.pt` (see `python/train_demo_policy.py` and
`python/eval_demo_policy.py`). The interface to the Rust node is
`docs/POLICY_CONTRACT.md`; nothing here runs on the robot.
"""
