//! How the robot's joints meet the policy's state and actions. The robot names its
//! joints (`joint_names`, the command order, and whatever `joint_states` carries); the
//! policy names its state and its action (`state_names`, `action_names`), which may
//! differ in length, order and naming. `joint_name_map` entries `robot:policy` rename
//! robot joints to the policy's names; a joint not in the map keeps its name.

use crate::core::config::value::parse_name_map;
use crate::core::config::Config;
use crate::core::contract::{ActionMode, PolicyMeta};

#[derive(Debug, Clone, PartialEq)]
pub struct JointMap {
    /// The robot joints read from `joint_states`: the command joints in `joint_names`
    /// order, then the state joints not among them.
    robot_joints: Vec<String>,
    /// Per policy state name, its index in `robot_joints`.
    state: Vec<usize>,
    /// Per command joint, the index of its action in the policy's action vector.
    action: Vec<usize>,
    /// With delta actions, per command joint, the index in the policy's state of the
    /// joint its action is added to.
    delta_base: Option<Vec<usize>>,
}

impl JointMap {
    /// The map of `cfg`'s joints to `meta`'s, or every way in which they do not meet.
    pub fn new(cfg: &Config, meta: &PolicyMeta) -> Result<JointMap, Vec<String>> {
        let pairs = parse_name_map(&cfg.joint_name_map).map_err(|e| vec![format!("joint_name_map: {e}")])?;
        let to_policy = |robot: &str| pairs.iter().find(|(r, _)| r == robot).map_or(robot, |(_, p)| p.as_str()).to_owned();
        let to_robot = |policy: &str| pairs.iter().find(|(_, p)| p == policy).map_or(policy, |(r, _)| r.as_str()).to_owned();

        let mut problems = Vec::new();
        let mut robot_joints = cfg.joint_names.clone();
        let state: Vec<usize> = meta
            .state_names
            .iter()
            .map(|s| {
                let r = to_robot(s);
                robot_joints.iter().position(|j| *j == r).unwrap_or_else(|| {
                    robot_joints.push(r);
                    robot_joints.len() - 1
                })
            })
            .collect();
        let mut action = Vec::with_capacity(cfg.joint_names.len());
        for joint in &cfg.joint_names {
            let p = to_policy(joint);
            match meta.action_names.iter().position(|a| *a == p) {
                Some(i) => action.push(i),
                None => problems.push(format!(
                    "joints: `{joint}` of joint_names{} is not an action of the policy (its actions: {:?})",
                    if p != *joint { format!(" (policy name `{p}`)") } else { String::new() },
                    meta.action_names
                )),
            }
        }
        for a in &meta.action_names {
            if !cfg.joint_names.iter().any(|j| to_policy(j) == *a) {
                problems.push(format!("joints: the policy's action `{a}` is no joint of joint_names {:?}", cfg.joint_names));
            }
        }
        let delta_base = (meta.action_mode == ActionMode::Delta).then(|| {
            action.iter().map(|&i| meta.state_names.iter().position(|s| *s == meta.action_names[i]).unwrap_or(usize::MAX)).collect::<Vec<_>>()
        });
        if delta_base.as_ref().is_some_and(|b| b.contains(&usize::MAX)) {
            problems.push("action_mode delta: an action has no state of the same name".into());
        }
        if problems.is_empty() {
            Ok(JointMap { robot_joints, state, action, delta_base })
        } else {
            Err(problems)
        }
    }

    /// The joints the node reads from `joint_states`, command joints first.
    pub fn robot_joints(&self) -> &[String] {
        &self.robot_joints
    }

    /// The policy's state from positions of [`JointMap::robot_joints`].
    pub fn state(&self, robot: &[f64]) -> Vec<f64> {
        self.state.iter().map(|&i| robot[i]).collect()
    }

    /// A chunk of the policy's actions as absolute commands in `joint_names` order;
    /// `state` is the policy state the chunk was computed from.
    pub fn commands(&self, actions: &[Vec<f64>], state: &[f64]) -> Vec<Vec<f64>> {
        self.to_commands(&self.absolute(actions, state))
    }

    /// A chunk of the policy's actions made absolute (delta actions added to the state
    /// of their name), still in the policy's action order.
    pub fn absolute(&self, actions: &[Vec<f64>], state: &[f64]) -> Vec<Vec<f64>> {
        let Some(base) = &self.delta_base else { return actions.to_vec() };
        actions
            .iter()
            .map(|a| {
                let mut abs = a.clone();
                for (&i, &b) in self.action.iter().zip(base) {
                    abs[i] = a[i] + state[b];
                }
                abs
            })
            .collect()
    }

    /// Absolute actions in the policy's order as commands in `joint_names` order.
    pub fn to_commands(&self, absolute: &[Vec<f64>]) -> Vec<Vec<f64>> {
        absolute.iter().map(|a| self.action.iter().map(|&i| a[i]).collect()).collect()
    }

    /// Absolute actions in the policy's order as the policy's own actions (delta ones
    /// taken back from `state`).
    pub fn relative(&self, absolute: &[Vec<f64>], state: &[f64]) -> Vec<Vec<f64>> {
        let Some(base) = &self.delta_base else { return absolute.to_vec() };
        absolute
            .iter()
            .map(|a| {
                let mut rel = a.clone();
                for (&i, &b) in self.action.iter().zip(base) {
                    rel[i] = a[i] - state[b];
                }
                rel
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::contract::{CameraSpec, Normalization, Outputs, PolicyKind, ResizeMode, PATCH_GRID};

    fn meta(state: &[&str], action: &[&str], mode: ActionMode) -> PolicyMeta {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyMeta {
            contract_version: 2,
            name: "t".into(),
            kind: PolicyKind::Chunk,
            cameras: vec![CameraSpec { name: "c".into(), width: 4, height: 4, resize: ResizeMode::Area, expected_width: None, expected_height: None }],
            state_names: names(state),
            action_names: names(action),
            action_mode: mode,
            chunk_length: 2,
            control_rate_hz: 50.0,
            tokenizer: None,
            outputs: Outputs::default(),
            patch_grid: PATCH_GRID,
            normalization: Normalization::identity(state.len(), action.len()),
        }
    }

    fn cfg(joints: &[&str], map: &[&str]) -> Config {
        Config {
            joint_names: joints.iter().map(|s| s.to_string()).collect(),
            joint_name_map: map.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        }
    }

    #[test]
    fn robot_names_map_to_policy_names_in_any_order() {
        let m = meta(&["shoulder", "elbow", "gripper_pos"], &["elbow", "shoulder"], ActionMode::Absolute);
        let c = cfg(&["j1_shoulder", "j2_elbow"], &["j1_shoulder:shoulder", "j2_elbow:elbow", "finger:gripper_pos"]);
        let map = JointMap::new(&c, &m).unwrap();
        assert_eq!(map.robot_joints(), ["j1_shoulder", "j2_elbow", "finger"]);
        assert_eq!(map.state(&[0.1, 0.2, 0.3]), [0.1, 0.2, 0.3]);
        // Actions come as (elbow, shoulder); commands go as (j1_shoulder, j2_elbow).
        assert_eq!(map.commands(&[vec![2.0, 1.0]], &[0.0; 3]), vec![vec![1.0, 2.0]]);
    }

    #[test]
    fn delta_actions_add_to_the_state_they_were_computed_from() {
        let m = meta(&["a", "b", "g"], &["b", "a"], ActionMode::Delta);
        let map = JointMap::new(&cfg(&["a", "b"], &[]), &m).unwrap();
        let state = [1.0, 10.0, 5.0];
        assert_eq!(map.commands(&[vec![0.5, -0.5], vec![1.0, 1.0]], &state), vec![vec![0.5, 10.5], vec![2.0, 11.0]]);
    }

    #[test]
    fn joints_that_do_not_meet_are_named() {
        let m = meta(&["a", "b"], &["a", "b"], ActionMode::Absolute);
        let e = JointMap::new(&cfg(&["a", "c"], &[]), &m).unwrap_err().join("\n");
        assert!(e.contains("`c` of joint_names is not an action") && e.contains("action `b` is no joint"), "{e}");
        let e = JointMap::new(&cfg(&["a", "b"], &["a:b", "b:b"]), &m).unwrap_err().join("\n");
        assert!(e.contains("policy joint `b` is mapped twice"), "{e}");
        assert!(parse_name_map(&["nocolon".into()]).unwrap_err().contains("robot_joint:policy_joint"));
    }
}
