//! Core values to ROS messages and back: one place for both adapters, the live node
//! (which publishes them) and the bag replay (which serializes them into a rosbag2 file).


use r2r::{
    builtin_interfaces::msg::{Duration as RosDuration, Time},
    diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue},
    sensor_msgs::msg::{Image, JointState},
    std_msgs::msg::{Float64MultiArray, Header},
    trajectory_msgs::msg::{JointTrajectory, JointTrajectoryPoint},
    vla_controller_msgs::{
        action::ExecuteInstruction,
        msg::{ActivationGrid, InferenceTiming, TokenAttention},
    },
    WrappedTypesupport,
};

use crate::core::config::CommandType;
use crate::core::inputs::CameraImage;
use crate::core::pipeline::Observation;
use crate::core::task::{Outcome, Progress};
use crate::core::topics::{self, OutputTopic, NODE_NAME};
use crate::driver::{Explained, Output, Status, TaskEnd};
use crate::explain::Explanation;

/// A builtin_interfaces/Time's fields as nanoseconds.
pub fn time_ns(sec: i32, nanosec: u32) -> i64 {
    sec as i64 * 1_000_000_000 + nanosec as i64
}

pub fn stamp_ns(t: &Time) -> i64 {
    time_ns(t.sec, t.nanosec)
}

pub fn ns_to_time(ns: i64) -> Time {
    Time { sec: ns.div_euclid(1_000_000_000) as i32, nanosec: ns.rem_euclid(1_000_000_000) as u32 }
}

pub fn ns_to_duration(ns: i64) -> RosDuration {
    RosDuration { sec: ns.div_euclid(1_000_000_000) as i32, nanosec: ns.rem_euclid(1_000_000_000) as u32 }
}

pub fn duration_ns(d: &RosDuration) -> i64 {
    time_ns(d.sec, d.nanosec)
}

pub fn header(ns: i64, frame_id: &str) -> Header {
    Header { stamp: ns_to_time(ns), frame_id: frame_id.to_owned() }
}

/// CDR bytes from a file (a bag) as a message, through rmw's deserialization, after the
/// one check it lacks: rmw_fastrtps' Fast CDR takes the last two bits of the
/// encapsulation header's options as padding at the end of the payload and reads past
/// the buffer when they exceed it (a segfault on five bytes, found by fuzzing). Messages
/// the middleware delivers to a subscription were not affected.
pub fn from_cdr<T: WrappedTypesupport>(data: &[u8]) -> r2r::Result<T> {
    match data {
        [_, _, _, options, payload @ ..] if usize::from(options & 0b11) <= payload.len() => T::from_serialized_bytes(data),
        _ => Err(r2r::Error::RCL_RET_INVALID_ARGUMENT),
    }
}

/// The stages of one inference, on the system clock: when the camera set was received,
/// queued for inference, taken by the inference thread and turned into a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkTiming {
    /// The camera set's stamp.
    pub source: i64,
    pub received: i64,
    pub queued: i64,
    pub started: i64,
    pub finished: i64,
}

/// The image with its pixel buffer moved, not copied.
pub fn camera_image(msg: Image) -> CameraImage {
    CameraImage {
        stamp: stamp_ns(&msg.header.stamp),
        frame_id: msg.header.frame_id,
        width: msg.width,
        height: msg.height,
        encoding: msg.encoding,
        step: msg.step,
        data: msg.data.into(),
    }
}

/// Every message type the node sends.
#[derive(Debug, Clone)]
pub enum Message {
    Array(Float64MultiArray),
    Trajectory(JointTrajectory),
    JointState(JointState),
    Image(Image),
    Header(Header),
    Tokens(TokenAttention),
    Grid(ActivationGrid),
    Diagnostics(DiagnosticArray),
    Timing(InferenceTiming),
}

impl Message {
    /// The ROS type name, `pkg/msg/Type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Array(_) => topics::FLOAT64_ARRAY_TYPE,
            Message::Trajectory(_) => topics::TRAJECTORY_TYPE,
            Message::JointState(_) => topics::JOINT_STATE_TYPE,
            Message::Image(_) => topics::IMAGE_TYPE,
            Message::Header(_) => topics::HEADER_TYPE,
            Message::Tokens(_) => topics::TOKENS_TYPE,
            Message::Grid(_) => topics::GRID_TYPE,
            Message::Diagnostics(_) => topics::DIAGNOSTICS_TYPE,
            Message::Timing(_) => topics::TIMING_TYPE,
        }
    }

    /// The message as CDR bytes, as a bag stores it.
    pub fn to_cdr(&self) -> r2r::Result<Vec<u8>> {
        match self {
            Message::Array(m) => m.to_serialized_bytes(),
            Message::Trajectory(m) => m.to_serialized_bytes(),
            Message::JointState(m) => m.to_serialized_bytes(),
            Message::Image(m) => m.to_serialized_bytes(),
            Message::Header(m) => m.to_serialized_bytes(),
            Message::Tokens(m) => m.to_serialized_bytes(),
            Message::Grid(m) => m.to_serialized_bytes(),
            Message::Diagnostics(m) => m.to_serialized_bytes(),
            Message::Timing(m) => m.to_serialized_bytes(),
        }
    }
}

/// An output as the messages that carry it, each with its topic.
pub fn messages(out: Output) -> Vec<(OutputTopic, Message)> {
    match out {
        Output::Command { stamp, points, kind, joint_names, period_ns } => {
            let msg = match kind {
                CommandType::Float64MultiArray => Message::Array(command_array(points.into_iter().next().unwrap_or_default())),
                CommandType::JointTrajectory => Message::Trajectory(command_trajectory(points, stamp, &joint_names, period_ns)),
            };
            vec![(OutputTopic::Commands, msg)]
        }
        Output::Gripper { positions } => vec![(OutputTopic::Gripper, Message::Array(command_array(positions)))],
        Output::Predicted { stamp, positions, joint_names } => {
            vec![(OutputTopic::Predicted, Message::JointState(predicted_joint_state(stamp, &joint_names, positions)))]
        }
        Output::CommandSource { set_stamp } => vec![(OutputTopic::TimingCommand, Message::Header(header(set_stamp, "")))],
        Output::Chunk { start, set_stamp, commands, joint_names, period_ns } => {
            vec![(OutputTopic::Chunk, Message::Trajectory(chunk_trajectory(start, set_stamp, commands, &joint_names, period_ns)))]
        }
        Output::Explanation(e) => {
            let Explained { obs, explanation, threshold, camera_names } = *e;
            explanation_msgs(&obs, explanation, threshold, &camera_names)
        }
        Output::Diagnostics(status) => vec![(OutputTopic::Diagnostics, Message::Diagnostics(diagnostics(status)))],
    }
}

/// The stages of one inference as vla_controller_msgs/InferenceTiming.
pub fn inference_timing(t: ChunkTiming) -> Message {
    Message::Timing(InferenceTiming {
        source: ns_to_time(t.source),
        received: ns_to_time(t.received),
        queued: ns_to_time(t.queued),
        started: ns_to_time(t.started),
        finished: ns_to_time(t.finished),
    })
}

/// What forward_command_controller takes.
pub fn command_array(positions: Vec<f64>) -> Float64MultiArray {
    Float64MultiArray { data: positions, ..Default::default() }
}

/// A trajectory of `points` one control period apart, point k at `(k + first) *
/// period_ns` from the header's stamp.
fn trajectory(header: Header, joint_names: &[String], points: Vec<Vec<f64>>, first: i64, period_ns: i64) -> JointTrajectory {
    JointTrajectory {
        header,
        joint_names: joint_names.to_vec(),
        points: points
            .into_iter()
            .zip(first..)
            .map(|(positions, k)| JointTrajectoryPoint { positions, time_from_start: ns_to_duration(k * period_ns), ..Default::default() })
            .collect(),
    }
}

/// What joint_trajectory_controller takes: the command of the tick at `now` and the
/// planned ones after it, point k to be reached (k + 1) control periods after `now`.
/// The header's stamp is `now`, the tick's time on the node's clock: the controller
/// starts the trajectory then, so the points keep the timing they were planned for (a
/// stamp of zero would start it on receipt, later by the transport's latency). Positions
/// only: the controller interpolates between them, and no velocity has to be zero at
/// the end of a trajectory that the next one continues.
pub fn command_trajectory(points: Vec<Vec<f64>>, now: i64, joint_names: &[String], period_ns: i64) -> JointTrajectory {
    trajectory(header(now, ""), joint_names, points, 1, period_ns)
}

/// A chunk as it will run: its first command at `start` (the header's stamp), one point
/// per control period; the frame_id names the camera set it was computed from (its
/// stamp in nanoseconds), so a viewer can tell chunks apart.
pub fn chunk_trajectory(start: i64, set_stamp: i64, commands: Vec<Vec<f64>>, joint_names: &[String], period_ns: i64) -> JointTrajectory {
    trajectory(header(start, &set_stamp.to_string()), joint_names, commands, 0, period_ns)
}

pub fn predicted_joint_state(now: i64, joint_names: &[String], positions: Vec<f64>) -> JointState {
    JointState { header: header(now, ""), name: joint_names.to_vec(), position: positions, ..Default::default() }
}

/// The node's statuses, one per concern, in one array.
pub fn diagnostics(statuses: Vec<Status>) -> DiagnosticArray {
    DiagnosticArray {
        header: header(statuses.first().map_or(0, |s| s.stamp), ""),
        status: statuses
            .into_iter()
            .map(|s| DiagnosticStatus {
                level: s.level,
                name: s.name,
                message: s.message,
                hardware_id: NODE_NAME.to_owned(),
                values: s.values.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
            })
            .collect(),
    }
}

/// A task's progress as the action's feedback.
pub fn task_feedback(p: &Progress, joint_names: &[String]) -> ExecuteInstruction::Feedback {
    ExecuteInstruction::Feedback {
        state: p.state.clone(),
        elapsed: ns_to_duration(p.elapsed_ns),
        joint_names: joint_names.to_vec(),
        command: p.command.clone(),
        velocity: p.velocity.clone(),
        speed: p.speed,
        settled_for: ns_to_duration(p.settled_for_ns),
    }
}

/// A task's end as the action's result.
pub fn task_result(end: &TaskEnd, joint_names: &[String]) -> ExecuteInstruction::Result {
    // The constants are bindgen's, one type each.
    let outcome = match end.outcome {
        Outcome::Settled => ExecuteInstruction::Result::SETTLED as u8,
        Outcome::TimeLimit => ExecuteInstruction::Result::TIME_LIMIT as u8,
        Outcome::Cancelled => ExecuteInstruction::Result::CANCELLED as u8,
        Outcome::Preempted(_) => ExecuteInstruction::Result::PREEMPTED as u8,
        Outcome::Fault(_) => ExecuteInstruction::Result::FAULT as u8,
        Outcome::Disabled => ExecuteInstruction::Result::DISABLED as u8,
    };
    ExecuteInstruction::Result {
        outcome,
        message: end.outcome.message(),
        elapsed: ns_to_duration(end.elapsed_ns),
        joint_names: joint_names.to_vec(),
        command: end.command.clone(),
    }
}

pub fn image_msg(header: Header, img: image::RgbImage) -> Image {
    let (width, height) = img.dimensions();
    Image { header, height, width, encoding: "rgb8".into(), is_bigendian: 0, step: width * 3, data: img.into_raw() }
}

/// One explanation as messages: token weights and the language heatmap stamped with the
/// camera set (for a policy that takes an instruction); per camera, the grid and the
/// overlay with the source image's stamp and frame_id, so RViz lines the overlay up with
/// the image.
fn explanation_msgs(obs: &Observation, e: Explanation, threshold: f32, camera_names: &[String]) -> Vec<(OutputTopic, Message)> {
    let set_header = header(obs.stamp, "");
    let method = e.method.to_string();
    let (rows, cols) = (e.rows as u32, e.cols as u32);
    let mut out = Vec::with_capacity(2 + 2 * e.grids.len());
    if let Some(language) = e.language {
        let tokens = TokenAttention {
            header: set_header.clone(),
            instruction: obs.instruction.to_string(),
            tokens: e.tokens,
            method: e.token_method.to_string(),
            weights: e.token_weights,
            threshold,
        };
        out.push((OutputTopic::Tokens, Message::Tokens(tokens)));
        out.push((OutputTopic::Language, Message::Image(image_msg(set_header, language))));
    }
    for (k, (values, overlay)) in e.grids.into_iter().zip(e.overlays).enumerate() {
        let cam = &obs.cameras[k];
        let h = header(cam.stamp, &cam.frame_id);
        let grid = ActivationGrid {
            header: h.clone(),
            camera_name: camera_names[k].clone(),
            method: method.clone(),
            rows,
            cols,
            values,
            feature_norms: Vec::new(),
        };
        out.push((OutputTopic::Grids, Message::Grid(grid)));
        out.push((OutputTopic::Overlay(k), Message::Image(image_msg(h, overlay))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdr_padding_beyond_the_payload_is_refused_before_rmw_reads_past_it() {
        // Found by fuzzing (fuzz/fuzz_targets/cdr.rs): rmw_deserialize segfaulted on the
        // first three (the last two bits of byte 3 are padding to drop from the end).
        for bytes in [&[0u8, 1, 0, 1][..], &[0, 1, 0, 2], &[0, 1, 0, 3], &[0, 1], &[]] {
            assert!(from_cdr::<JointState>(bytes).is_err(), "{bytes:?}");
        }
        let js = JointState { name: vec!["a".into()], position: vec![1.5], ..Default::default() };
        let bytes = js.to_serialized_bytes().unwrap();
        assert_eq!(from_cdr::<JointState>(&bytes).unwrap(), js);
    }
}
