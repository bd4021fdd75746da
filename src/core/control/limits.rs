//! The joint limits the safety filter enforces: per joint, a position range and the
//! largest command change per control tick. They come from the parameters file alone,
//! or from the robot description (URDF) with the parameters file allowed to tighten
//! them, never to loosen them. As ros2_control reads them: `<limit lower upper>` of
//! revolute and prismatic joints (continuous joints have no position limits) and
//! `<limit velocity>`, which times the control period is the largest step.
//!
//! Parsing and merging take the URDF as a string: no ROS, no files.

use std::collections::BTreeMap;

use urdf_rs::JointType;

use crate::core::config::Config;
use crate::error::{Error, Result};

/// Per joint, in `joint_names` order.
#[derive(Debug, Clone, PartialEq)]
pub struct JointLimits {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    /// Largest command change per control tick.
    pub max_step: Vec<f64>,
}

/// Where each joint limit came from and what the parameters file changed: for the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merge {
    /// Parameter values looser than the robot description's, which therefore do not
    /// apply (one line each, naming joint, parameter and both values).
    pub ignored: Vec<String>,
    /// Parameter values that tightened the robot description's.
    pub tightened: Vec<String>,
}

impl JointLimits {
    /// The limits of the parameters file (`joint_lower_limits`, `joint_upper_limits`,
    /// `max_step_per_tick`), for a configuration without a robot description.
    pub fn from_config(cfg: &Config) -> JointLimits {
        JointLimits {
            lower: cfg.joint_lower_limits.clone(),
            upper: cfg.joint_upper_limits.clone(),
            max_step: cfg.max_step_per_tick.clone(),
        }
    }

    /// The robot description's limits for `cfg.joint_names`, tightened by the
    /// parameters file where it gives values (an empty list gives none). Every joint of
    /// `joint_names` must be a revolute, prismatic or continuous joint of the
    /// description, not a mimic joint; the errors name every joint that is not.
    pub fn from_robot_description(urdf: &str, cfg: &Config) -> Result<(JointLimits, Merge)> {
        let joints = urdf_joints(urdf)?;
        let period = 1.0 / cfg.control_rate_hz;
        let mut problems = Vec::new();
        let mut limits = JointLimits { lower: Vec::new(), upper: Vec::new(), max_step: Vec::new() };
        for name in &cfg.joint_names {
            match joints.get(name).map(|j| j.commandable(name)) {
                None => problems.push(format!("joint `{name}` is not in the robot description")),
                Some(Err(why)) => problems.push(why),
                Some(Ok((lower, upper, velocity))) => {
                    limits.lower.push(lower);
                    limits.upper.push(upper);
                    limits.max_step.push(velocity * period);
                }
            }
        }
        if !problems.is_empty() {
            let movable: Vec<&str> = joints.iter().filter(|(_, j)| j.movable()).map(|(n, _)| n.as_str()).collect();
            problems.push(format!("the robot description's movable joints: {}", movable.join(", ")));
            return Err(Error::RobotDescription(format!("does not match joint_names:\n  - {}", problems.join("\n  - "))));
        }
        let merge = limits.tighten_with(cfg)?;
        Ok((limits, merge))
    }

    /// Applies the parameters file's values where they are tighter; an empty list
    /// leaves the robot description's values.
    fn tighten_with(&mut self, cfg: &Config) -> Result<Merge> {
        let mut merge = Merge::default();
        let lists: [(&str, &[f64], &mut Vec<f64>, bool); 3] = [
            ("joint_lower_limits", &cfg.joint_lower_limits, &mut self.lower, false),
            ("joint_upper_limits", &cfg.joint_upper_limits, &mut self.upper, true),
            ("max_step_per_tick", &cfg.max_step_per_tick, &mut self.max_step, true),
        ];
        for (param, given, effective, smaller_is_tighter) in lists {
            for (i, (&p, e)) in given.iter().zip(effective.iter_mut()).enumerate() {
                let tighter = if smaller_is_tighter { p < *e } else { p > *e };
                let line = format!("{param}[{}] = {p} (robot description: {e})", cfg.joint_names[i]);
                if tighter {
                    *e = p;
                    merge.tightened.push(line);
                } else if p != *e {
                    merge.ignored.push(format!("{line}: looser, the robot description's value applies"));
                }
            }
        }
        for (i, name) in cfg.joint_names.iter().enumerate() {
            let (lo, hi) = (self.lower[i], self.upper[i]);
            if lo >= hi {
                return Err(Error::RobotDescription(format!(
                    "joint `{name}`: with the parameters file, the lower limit {lo} is not below the upper limit {hi}"
                )));
            }
        }
        Ok(merge)
    }

    /// The limits for `cfg`: the parameters file's, or with a robot description
    /// (`urdf`, which `robot_description_source` then requires) its limits tightened by
    /// the parameters file. What was tightened or ignored is logged.
    pub fn resolve(cfg: &Config, urdf: Option<&str>) -> Result<JointLimits> {
        use crate::core::config::RobotDescriptionSource;
        if cfg.robot_description_source == RobotDescriptionSource::None {
            return Ok(JointLimits::from_config(cfg));
        }
        let (limits, merge) = JointLimits::from_robot_description(urdf.unwrap_or_default(), cfg)?;
        for line in &merge.ignored {
            tracing::warn!("{line}");
        }
        for line in &merge.tightened {
            tracing::info!("{line}: tightened by the parameters file");
        }
        tracing::info!("joint limits from the robot description: {}", limits.describe(&cfg.joint_names));
        Ok(limits)
    }

    /// One line per joint, for the log: `elbow [-3.1, 0] step 0.05`.
    pub fn describe(&self, joint_names: &[String]) -> String {
        let joints = joint_names.iter().enumerate().map(|(i, n)| format!("{n} [{}, {}] step {}", self.lower[i], self.upper[i], self.max_step[i]));
        joints.collect::<Vec<_>>().join("; ")
    }
}

/// One joint of the description: what the limits need.
#[derive(Debug, Clone)]
struct UrdfJoint {
    kind: JointType,
    lower: f64,
    upper: f64,
    velocity: f64,
    mimic: Option<String>,
}

impl UrdfJoint {
    fn movable(&self) -> bool {
        matches!(self.kind, JointType::Revolute | JointType::Prismatic | JointType::Continuous)
    }

    /// (lower, upper, velocity) of a joint the node may command, or why it may not.
    fn commandable(&self, name: &str) -> std::result::Result<(f64, f64, f64), String> {
        if !self.movable() {
            return Err(format!("joint `{name}` is a {:?} joint in the robot description; it cannot be commanded", self.kind));
        }
        if let Some(m) = &self.mimic {
            return Err(format!("joint `{name}` mimics `{m}` in the robot description; command `{m}` instead"));
        }
        // A velocity limit of 0 (or none: URDF before 1.2 reads a missing <limit> as 0)
        // would forbid all motion; the description is incomplete.
        if self.velocity.is_nan() || self.velocity <= 0.0 {
            return Err(format!("joint `{name}` has no velocity limit in the robot description (<limit velocity=...> is required)"));
        }
        let (lower, upper) = match self.kind {
            JointType::Continuous => (f64::NEG_INFINITY, f64::INFINITY),
            _ if self.lower.is_nan() || self.upper.is_nan() || self.lower >= self.upper => {
                return Err(format!(
                    "joint `{name}` has no position range in the robot description (lower {}, upper {})",
                    self.lower, self.upper
                ))
            }
            _ => (self.lower, self.upper),
        };
        Ok((lower, upper, self.velocity))
    }
}

/// Every joint of a URDF by name.
fn urdf_joints(urdf: &str) -> Result<BTreeMap<String, UrdfJoint>> {
    if urdf.trim().is_empty() {
        return Err(Error::RobotDescription("is empty".into()));
    }
    let robot = urdf_rs::read_from_string(urdf).map_err(|e| Error::RobotDescription(format!("is not a valid URDF: {e}")))?;
    Ok(robot
        .joints
        .into_iter()
        .map(|j| {
            let joint = UrdfJoint {
                kind: j.joint_type,
                lower: j.limit.lower,
                upper: j.limit.upper,
                velocity: j.limit.velocity,
                mimic: j.mimic.map(|m| m.joint),
            };
            (j.name, joint)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-joint arm with a gripper (and its mimic finger), a fixed camera mount and a
    /// continuous wrist.
    const URDF: &str = r#"<?xml version="1.0"?>
<robot name="test_arm">
  <link name="base"/><link name="upper"/><link name="wrist"/><link name="finger_l"/><link name="finger_r"/><link name="cam"/>
  <joint name="shoulder" type="revolute">
    <parent link="base"/><child link="upper"/><axis xyz="0 0 1"/>
    <limit lower="-1.5" upper="1.5" effort="10" velocity="2.0"/>
  </joint>
  <joint name="wrist_roll" type="continuous">
    <parent link="upper"/><child link="wrist"/><axis xyz="1 0 0"/>
    <limit effort="5" velocity="4.0"/>
  </joint>
  <joint name="gripper" type="prismatic">
    <parent link="wrist"/><child link="finger_l"/><axis xyz="0 1 0"/>
    <limit lower="0" upper="0.04" effort="20" velocity="0.1"/>
  </joint>
  <joint name="gripper_mimic" type="prismatic">
    <parent link="wrist"/><child link="finger_r"/><axis xyz="0 -1 0"/>
    <limit lower="0" upper="0.04" effort="20" velocity="0.1"/>
    <mimic joint="gripper"/>
  </joint>
  <joint name="camera_mount" type="fixed"><parent link="base"/><child link="cam"/></joint>
</robot>"#;

    fn config(joints: &[&str], lower: Vec<f64>, upper: Vec<f64>, step: Vec<f64>) -> Config {
        Config {
            joint_names: joints.iter().map(|s| s.to_string()).collect(),
            control_rate_hz: 50.0,
            joint_lower_limits: lower,
            joint_upper_limits: upper,
            max_step_per_tick: step,
            ..Config::default()
        }
    }

    #[test]
    fn limits_and_steps_come_from_the_description() {
        let cfg = config(&["shoulder", "wrist_roll", "gripper"], vec![], vec![], vec![]);
        let (l, merge) = JointLimits::from_robot_description(URDF, &cfg).unwrap();
        assert_eq!(l.lower, vec![-1.5, f64::NEG_INFINITY, 0.0]);
        assert_eq!(l.upper, vec![1.5, f64::INFINITY, 0.04]);
        // velocity x control period (1/50 s)
        assert_eq!(l.max_step, vec![2.0 / 50.0, 4.0 / 50.0, 0.1 / 50.0]);
        assert_eq!(merge, Merge::default());
    }

    #[test]
    fn the_parameters_file_only_tightens() {
        let cfg = config(
            &["shoulder", "gripper"],
            vec![-1.0, -0.5],     // tighter, looser
            vec![2.0, 0.03],      // looser, tighter
            vec![0.01, 0.5],      // tighter, looser
        );
        let (l, merge) = JointLimits::from_robot_description(URDF, &cfg).unwrap();
        assert_eq!(l.lower, vec![-1.0, 0.0]);
        assert_eq!(l.upper, vec![1.5, 0.03]);
        assert_eq!(l.max_step, vec![0.01, 0.1 / 50.0]);
        assert_eq!(merge.tightened.len(), 3, "{merge:?}");
        assert_eq!(merge.ignored.len(), 3, "{merge:?}");
        assert!(merge.ignored.iter().any(|l| l.contains("joint_upper_limits[shoulder] = 2") && l.contains("1.5")), "{merge:?}");
    }

    #[test]
    fn a_mismatch_names_every_joint_that_is_not_commandable() {
        let cfg = config(&["shoulder", "elbow", "camera_mount", "gripper_mimic"], vec![], vec![], vec![]);
        let e = JointLimits::from_robot_description(URDF, &cfg).unwrap_err().to_string();
        assert!(e.contains("joint `elbow` is not in the robot description"), "{e}");
        assert!(e.contains("`camera_mount` is a Fixed joint"), "{e}");
        assert!(e.contains("`gripper_mimic` mimics `gripper`"), "{e}");
        assert!(e.contains("movable joints: gripper, gripper_mimic, shoulder, wrist_roll"), "{e}");
    }

    #[test]
    fn broken_descriptions_and_contradictions_are_errors() {
        let cfg = config(&["shoulder"], vec![], vec![], vec![]);
        for (urdf, expect) in [
            ("", "is empty"),
            ("<robot name='x'><joint name='shoulder'", "not a valid URDF"),
            (
                "<robot name='x'><link name='a'/><link name='b'/><joint name='shoulder' type='revolute'><parent link='a'/><child link='b'/></joint></robot>",
                "no velocity limit",
            ),
            (
                "<robot name='x'><link name='a'/><link name='b'/><joint name='shoulder' type='revolute'><parent link='a'/><child link='b'/><limit lower='1' upper='1' velocity='1' effort='1'/></joint></robot>",
                "no position range",
            ),
        ] {
            let e = JointLimits::from_robot_description(urdf, &cfg).unwrap_err().to_string();
            assert!(e.contains(expect), "{urdf}: {e}");
        }
        // A parameters file lower limit above the description's upper one.
        let cfg = config(&["shoulder"], vec![1.6], vec![], vec![]);
        let e = JointLimits::from_robot_description(URDF, &cfg).unwrap_err().to_string();
        assert!(e.contains("`shoulder`") && e.contains("not below"), "{e}");
    }
}
