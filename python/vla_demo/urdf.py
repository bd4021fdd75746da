"""The URDF of the simulated arm of `scene.py`: its joints, in the kinematic chain `fk`
computes, with `scene.JOINT_LOWER` / `JOINT_UPPER` as position limits, plus the camera
tilt joint that the simulated arm also reports (as real arms report joints a controller
does not command).

    python -m vla_demo.urdf > demo_arm.urdf
"""

from __future__ import annotations

import sys

from . import scene as sc

#: Velocity limits (rad/s; m/s for the gripper): at the demo's 50 Hz, the steps of
#: `max_step_per_tick` in config/controller.yaml (0.05 rad, 0.01 m).
VELOCITY = (2.5, 2.5, 2.5, 2.5, 2.5, 0.5)

#: Joint axis and origin (relative to the previous link) of each joint, in order.
_CHAIN = {
    "shoulder_pan": ("revolute", "0 0 1", f"0 0 {sc.SHOULDER_HEIGHT}"),
    "shoulder_lift": ("revolute", "0 -1 0", "0 0 0"),
    "elbow": ("revolute", "0 -1 0", f"{sc.L_UPPER} 0 0"),
    "wrist_pitch": ("revolute", "0 -1 0", f"{sc.L_FORE} 0 0"),
    "wrist_roll": ("revolute", "1 0 0", "0 0 0"),
    "gripper": ("prismatic", "0 1 0", f"{sc.L_TOOL} 0 0"),
}


def arm_urdf(lower=None, upper=None, velocity=None, joints=None, name: str = "vla_demo_arm") -> str:
    """The arm's URDF. `lower`, `upper`, `velocity` (one per joint of
    `scene.JOINT_NAMES`) replace the defaults; `joints` names the joints to include (all
    by default), to write a description that lacks some."""
    lower = list(sc.JOINT_LOWER if lower is None else lower)
    upper = list(sc.JOINT_UPPER if upper is None else upper)
    velocity = list(VELOCITY if velocity is None else velocity)
    keep = set(sc.JOINT_NAMES if joints is None else joints)
    links = ["base_link"] + [f"{j}_link" for j in sc.JOINT_NAMES] + ["camera_link"]
    out = ['<?xml version="1.0"?>', f'<robot name="{name}">']
    out += [f'  <link name="{link}"/>' for link in links]
    parent = "base_link"
    for i, joint in enumerate(sc.JOINT_NAMES):
        kind, axis, origin = _CHAIN[joint]
        child = f"{joint}_link"
        if joint in keep:
            out += [
                f'  <joint name="{joint}" type="{kind}">',
                f'    <parent link="{parent}"/><child link="{child}"/>',
                f'    <origin xyz="{origin}" rpy="0 0 0"/><axis xyz="{axis}"/>',
                f'    <limit lower="{lower[i]}" upper="{upper[i]}" effort="50" velocity="{velocity[i]}"/>',
                "  </joint>",
            ]
        else:
            # Still a tree: a fixed joint where the movable one is left out.
            out.append(f'  <joint name="{joint}_fixed" type="fixed"><parent link="{parent}"/><child link="{child}"/></joint>')
        # The gripper's fingers hang off the wrist; every other joint continues the chain.
        parent = child if joint != "gripper" else parent
    out += [
        '  <joint name="camera_tilt" type="revolute">',
        '    <parent link="base_link"/><child link="camera_link"/><axis xyz="0 1 0"/>',
        '    <limit lower="-0.5" upper="0.5" effort="5" velocity="1.0"/>',
        "  </joint>",
        "</robot>",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(arm_urdf())
