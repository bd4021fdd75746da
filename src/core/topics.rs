//! Every topic of the node and its message type, in one place: the live node subscribes
//! and publishes under these names (relative, so namespaces and remapping apply), the
//! replay reads and writes a bag under their absolute forms, and the counters are kept
//! under the input names.

/// Name of the node, and of its private namespace in topic names.
pub const NODE_NAME: &str = "vla_controller";

pub const JOINT_STATES: &str = "joint_states";
pub const INSTRUCTION: &str = "instruction";
/// The URDF, as robot_state_publisher serves it (std_msgs/String, transient local), with
/// `robot_description_source: topic`.
pub const ROBOT_DESCRIPTION: &str = "robot_description";
/// std_srvs/SetBool: enable (true) or disable (false, hold) the node.
pub const ENABLE_SERVICE: &str = "~/enable";
/// vla_controller_msgs/action/ExecuteInstruction: one instruction run as a task.
pub const EXECUTE_ACTION: &str = "~/execute_instruction";
/// Under use_sim_time.
pub const CLOCK: &str = "/clock";

// Message types, `pkg/msg/Type`: the inputs', then the outputs'.
pub const IMAGE_TYPE: &str = "sensor_msgs/msg/Image";
pub const JOINT_STATE_TYPE: &str = "sensor_msgs/msg/JointState";
pub const STRING_TYPE: &str = "std_msgs/msg/String";
pub const FLOAT64_ARRAY_TYPE: &str = "std_msgs/msg/Float64MultiArray";
pub const TRAJECTORY_TYPE: &str = "trajectory_msgs/msg/JointTrajectory";
pub const HEADER_TYPE: &str = "std_msgs/msg/Header";
pub const TOKENS_TYPE: &str = "vla_controller_msgs/msg/TokenAttention";
pub const GRID_TYPE: &str = "vla_controller_msgs/msg/ActivationGrid";
pub const DIAGNOSTICS_TYPE: &str = "diagnostic_msgs/msg/DiagnosticArray";
pub const TIMING_TYPE: &str = "vla_controller_msgs/msg/InferenceTiming";

/// The input topic of camera `name`.
pub fn camera(name: &str) -> String {
    format!("camera/{name}/image_raw")
}

/// An input of the pipeline, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    /// The camera at this index of `camera_names`.
    Camera(usize),
    JointStates,
    Instruction,
    /// The policy's chunks (counted when refused or discarded).
    Policy,
}

impl Input {
    /// The message type a bag must hold for this input.
    pub fn type_name(self) -> &'static str {
        match self {
            Input::Camera(_) => IMAGE_TYPE,
            Input::JointStates => JOINT_STATE_TYPE,
            Input::Instruction | Input::Policy => STRING_TYPE,
        }
    }
}

/// The names of the inputs of one configuration: what counters and logs call them.
#[derive(Debug, Clone)]
pub struct InputNames {
    cameras: Vec<String>,
}

impl InputNames {
    pub fn new(camera_names: &[String]) -> Self {
        InputNames { cameras: camera_names.iter().map(|c| camera(c)).collect() }
    }

    /// The topic of `input`, relative (`camera/main/image_raw`); `policy` for the policy.
    pub fn topic(&self, input: Input) -> &str {
        match input {
            Input::Camera(k) => &self.cameras[k],
            Input::JointStates => JOINT_STATES,
            Input::Instruction => INSTRUCTION,
            Input::Policy => "policy",
        }
    }

    /// Every subscribed input with its topic, cameras first.
    pub fn subscribed(&self) -> impl Iterator<Item = (Input, &str)> {
        let cameras = (0..self.cameras.len()).map(Input::Camera);
        cameras.chain([Input::JointStates, Input::Instruction]).map(|i| (i, self.topic(i)))
    }
}

/// An output of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputTopic {
    /// std_msgs/Float64MultiArray or trajectory_msgs/JointTrajectory (`command_type`).
    Commands,
    /// std_msgs/Float64MultiArray: the gripper joints' command (`gripper_joints`).
    Gripper,
    /// sensor_msgs/JointState: the smoothed action about to be executed.
    Predicted,
    /// sensor_msgs/Image: the language heatmap.
    Language,
    /// vla_controller_msgs/TokenAttention.
    Tokens,
    /// vla_controller_msgs/ActivationGrid, one per camera.
    Grids,
    /// sensor_msgs/Image: the overlay of the camera at this index.
    Overlay(usize),
    /// diagnostic_msgs/DiagnosticArray.
    Diagnostics,
    /// vla_controller_msgs/InferenceTiming of each chunk.
    TimingChunk,
    /// std_msgs/Header with the stamp of the newest camera set behind each command.
    TimingCommand,
    /// trajectory_msgs/JointTrajectory: each new chunk as it will run.
    Chunk,
}

impl OutputTopic {
    /// The name the node publishes under: relative (`joint_commands`), private
    /// (`~/attention/main`) or absolute (`/diagnostics`).
    pub fn name(self, camera_names: &[String]) -> String {
        match self {
            OutputTopic::Commands => "joint_commands".into(),
            OutputTopic::Gripper => "gripper_commands".into(),
            OutputTopic::Predicted => "~/predicted_joint_states".into(),
            OutputTopic::Language => "~/attention/language".into(),
            OutputTopic::Tokens => "~/attention/tokens".into(),
            OutputTopic::Grids => "~/attention/grids".into(),
            OutputTopic::Overlay(k) => format!("~/attention/{}", camera_names[k]),
            OutputTopic::Diagnostics => "/diagnostics".into(),
            OutputTopic::TimingChunk => "~/timing/chunk".into(),
            OutputTopic::TimingCommand => "~/timing/command".into(),
            OutputTopic::Chunk => "~/chunk".into(),
        }
    }

    /// The absolute name, as a bag records it, for a node named [`NODE_NAME`] in the
    /// root namespace.
    pub fn absolute(self, camera_names: &[String]) -> String {
        let name = self.name(camera_names);
        match name.strip_prefix("~/") {
            Some(private) => format!("/{NODE_NAME}/{private}"),
            None if name.starts_with('/') => name,
            None => format!("/{name}"),
        }
    }
}

/// `topic` with a leading `/`.
pub fn absolute(topic: &str) -> String {
    if topic.starts_with('/') { topic.to_owned() } else { format!("/{topic}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_relative_private_and_absolute() {
        let cams = vec!["main".to_owned(), "top".to_owned()];
        assert_eq!(OutputTopic::Commands.absolute(&cams), "/joint_commands");
        assert_eq!(OutputTopic::Gripper.absolute(&cams), "/gripper_commands");
        assert_eq!(OutputTopic::Overlay(1).name(&cams), "~/attention/top");
        assert_eq!(OutputTopic::Overlay(1).absolute(&cams), "/vla_controller/attention/top");
        assert_eq!(OutputTopic::Diagnostics.absolute(&cams), "/diagnostics");
        let inputs = InputNames::new(&cams);
        let all: Vec<_> = inputs.subscribed().map(|(_, t)| t.to_owned()).collect();
        assert_eq!(all, ["camera/main/image_raw", "camera/top/image_raw", "joint_states", "instruction"]);
    }
}
