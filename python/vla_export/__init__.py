"""Policies trained with other frameworks, exported to the node's policy contract
(docs/POLICY_CONTRACT.md): `python -m vla_export.lerobot` for LeRobot checkpoints."""
