//! Core values to ROS messages and back: one place for both adapters, the live node
//! (which publishes them) and the bag replay (which serializes them into a rosbag2 file).

use std::time::Duration;

use r2r::{
    NativeMsg, WrappedTypesupport,
    builtin_interfaces::msg::{Duration as RosDuration, Time},
    diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue},
    sensor_msgs::msg::{Image, JointState},
    std_msgs::msg::{Float64MultiArray, Header},
    trajectory_msgs::msg::{JointTrajectory, JointTrajectoryPoint},
    vla_controller_msgs::msg::{ActivationGrid, InferenceTiming, TokenAttention},
};

use crate::core::{CameraImage, ControlState, Observation, Pixels};
use crate::explain::Explanation;
use crate::stats::Stats;

/// Name of the node, and of its private namespace in topic names.
pub const NODE_NAME: &str = "vla_controller";
pub const COMMAND_TOPIC: &str = "joint_commands";
pub const PREDICTED_TOPIC: &str = "predicted_joint_states";
pub const LANGUAGE_TOPIC: &str = "attention/language";
pub const TOKENS_TOPIC: &str = "attention/tokens";
pub const GRIDS_TOPIC: &str = "attention/grids";
pub const DIAGNOSTICS_TOPIC: &str = "/diagnostics";
/// vla_controller_msgs/InferenceTiming of each chunk, when it is ready.
pub const TIMING_CHUNK_TOPIC: &str = "timing/chunk";
/// std_msgs/Header with the stamp of the newest camera set behind each command.
pub const TIMING_COMMAND_TOPIC: &str = "timing/command";

/// Overlay topic of a camera, in the node's private namespace.
pub fn overlay_topic(camera: &str) -> String {
    format!("attention/{camera}")
}

pub fn stamp_ns(t: &Time) -> i64 {
    ns(t.sec, t.nanosec)
}

/// A builtin_interfaces/Time's fields as nanoseconds.
fn ns(sec: i32, nanosec: u32) -> i64 {
    sec as i64 * 1_000_000_000 + nanosec as i64
}

pub fn ns_to_time(ns: i64) -> Time {
    Time { sec: ns.div_euclid(1_000_000_000) as i32, nanosec: ns.rem_euclid(1_000_000_000) as u32 }
}

pub fn header(ns: i64, frame_id: &str) -> Header {
    Header { stamp: ns_to_time(ns), frame_id: frame_id.to_owned() }
}

/// The stages of one inference: the camera set's stamp and, on the system clock, when
/// the set was received, queued, taken and its chunk finished.
pub fn inference_timing(source: i64, received: i64, queued: i64, started: i64, finished: i64) -> InferenceTiming {
    InferenceTiming {
        source: ns_to_time(source),
        received: ns_to_time(received),
        queued: ns_to_time(queued),
        started: ns_to_time(started),
        finished: ns_to_time(finished),
    }
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

/// The image of a message as the middleware handed it over (r2r's `subscribe_native`):
/// the pixels stay in the taken message, where r2r's typed subscriptions would copy
/// them into a new vector.
pub fn camera_image_native(msg: NativeMsg<Image>) -> CameraImage {
    let h = &msg.header;
    let stamp = ns(h.stamp.sec, h.stamp.nanosec);
    let (frame_id, encoding) = (h.frame_id.to_str().to_owned(), msg.encoding.to_str().to_owned());
    let (width, height, step) = (msg.width, msg.height, msg.step);
    let data = if msg.is_loaned {
        // A loaned message goes back to its subscription when dropped, which must happen
        // on this thread: copy its pixels instead.
        native_pixels(&msg).to_vec().into()
    } else {
        Pixels::new(NativeImage(msg))
    };
    CameraImage { stamp, frame_id, width, height, encoding, step, data }
}

type NativeImageStruct = <Image as WrappedTypesupport>::CStruct;

fn native_pixels(msg: &NativeImageStruct) -> &[u8] {
    let seq = &msg.data;
    if seq.size == 0 || seq.data.is_null() {
        return &[];
    }
    // SAFETY: a rosidl sequence holds `size` initialized elements at `data`, alive as
    // long as its message.
    unsafe { std::slice::from_raw_parts(seq.data, seq.size) }
}

/// A taken sensor_msgs/Image that is not loaned, readable as its pixel bytes.
struct NativeImage(NativeMsg<Image>);

// SAFETY: a message that is not loaned is a heap allocation that this wrapper alone owns
// (r2r frees it with the message type's destroy function, which needs no particular
// thread), and after the take it is only read.
unsafe impl Send for NativeImage {}
unsafe impl Sync for NativeImage {}

impl AsRef<[u8]> for NativeImage {
    fn as_ref(&self) -> &[u8] {
        native_pixels(&self.0)
    }
}

/// What forward_command_controller takes.
pub fn command_array(positions: Vec<f64>) -> Float64MultiArray {
    Float64MultiArray { data: positions, ..Default::default() }
}

/// What joint_trajectory_controller takes: one point, reached in one control period.
pub fn command_trajectory(positions: Vec<f64>, now: i64, joint_names: &[String], period: Duration) -> JointTrajectory {
    JointTrajectory {
        header: header(now, ""),
        joint_names: joint_names.to_vec(),
        points: vec![JointTrajectoryPoint {
            positions,
            time_from_start: RosDuration { sec: 0, nanosec: period.as_nanos() as u32 },
            ..Default::default()
        }],
    }
}

pub fn predicted_joint_state(now: i64, joint_names: &[String], positions: Vec<f64>) -> JointState {
    JointState { header: header(now, ""), name: joint_names.to_vec(), position: positions, ..Default::default() }
}

/// The node's status: its state, and every counter.
pub fn diagnostics(now: i64, name: &str, state: &ControlState, st: &Stats) -> DiagnosticArray {
    let mut values = vec![
        ("state".to_owned(), state.to_string()),
        ("observations".to_owned(), st.observations.to_string()),
        ("observations_superseded".to_owned(), st.observations_superseded.to_string()),
        ("inferences".to_owned(), st.inferences.to_string()),
        ("inference_errors".to_owned(), st.inference_errors.to_string()),
        ("inference_ms_last".to_owned(), format!("{:.2}", st.inference_ms_last)),
        ("inference_ms_max".to_owned(), format!("{:.2}", st.inference_ms_max)),
        ("commands".to_owned(), st.commands.to_string()),
        ("hold_commands".to_owned(), st.hold_commands.to_string()),
        ("clipped_by_limit".to_owned(), st.clipped_by_limit.to_string()),
        ("clipped_by_step".to_owned(), st.clipped_by_step.to_string()),
        ("explanations".to_owned(), st.explanations.to_string()),
        ("explain_errors".to_owned(), st.explain_errors.to_string()),
        ("explain_ms_last".to_owned(), format!("{:.1}", st.explain_ms_last)),
        ("explain_ms_max".to_owned(), format!("{:.1}", st.explain_ms_max)),
        ("dropped_total".to_owned(), st.dropped_total().to_string()),
        ("rejected_total".to_owned(), st.rejected_total().to_string()),
    ];
    for (topic, n) in &st.received {
        values.push((format!("received/{topic}"), n.to_string()));
    }
    for (topic, n) in &st.used {
        values.push((format!("used/{topic}"), n.to_string()));
    }
    for ((topic, reason), n) in &st.dropped {
        values.push((format!("dropped/{topic}/{reason}"), n.to_string()));
    }
    for ((topic, reason), n) in &st.rejected {
        values.push((format!("rejected/{topic}/{reason}"), n.to_string()));
    }
    DiagnosticArray {
        header: header(now, ""),
        status: vec![DiagnosticStatus {
            level: state.level(),
            name: name.to_owned(),
            message: state.to_string(),
            hardware_id: NODE_NAME.to_owned(),
            values: values.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
        }],
    }
}

pub fn image_msg(header: Header, img: image::RgbImage) -> Image {
    let (width, height) = img.dimensions();
    Image { header, height, width, encoding: "rgb8".into(), is_bigendian: 0, step: width * 3, data: img.into_raw() }
}

/// One explanation as messages: token weights and the language heatmap stamped with the
/// camera set; per camera, the grid and the overlay with the source image's stamp and
/// frame_id, so RViz lines the overlay up with the image.
pub struct ExplanationMsgs {
    pub tokens: TokenAttention,
    pub language: Image,
    pub grids: Vec<ActivationGrid>,
    pub overlays: Vec<Image>,
}

pub fn explanation_msgs(obs: &Observation, e: Explanation, threshold: f32, camera_names: &[String]) -> ExplanationMsgs {
    let set_header = header(obs.stamp, "");
    let method = e.method.to_string();
    let (rows, cols) = (e.rows as u32, e.cols as u32);
    let mut grids = Vec::with_capacity(e.grids.len());
    let mut overlays = Vec::with_capacity(e.grids.len());
    for (k, (values, overlay)) in e.grids.into_iter().zip(e.overlays).enumerate() {
        let cam = &obs.cameras[k];
        let h = header(cam.stamp, &cam.frame_id);
        grids.push(ActivationGrid {
            header: h.clone(),
            camera_name: camera_names[k].clone(),
            method: method.clone(),
            rows,
            cols,
            values,
            feature_norms: Vec::new(),
        });
        overlays.push(image_msg(h, overlay));
    }
    ExplanationMsgs {
        tokens: TokenAttention {
            header: set_header.clone(),
            instruction: obs.instruction.to_string(),
            tokens: e.tokens,
            weights: e.token_weights,
            threshold,
        },
        language: image_msg(set_header, e.language),
        grids,
        overlays,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_image_reads_as_the_message_it_was_made_from() {
        let msg = Image {
            header: header(1_700_000_000_123_456_789, "cam_main"),
            height: 2,
            width: 3,
            encoding: "bgr8".into(),
            is_bigendian: 0,
            step: 9,
            data: (0..18).collect(),
        };
        let image = camera_image_native(NativeMsg::from(&msg));
        let moved = camera_image(msg);
        assert_eq!(image.stamp, 1_700_000_000_123_456_789);
        assert_eq!(format!("{image:?}"), format!("{moved:?}"));
        assert_eq!(&image.data[..], &moved.data[..]);

        let empty = Image { encoding: "rgb8".into(), ..Default::default() };
        assert!(camera_image_native(NativeMsg::from(&empty)).data.is_empty());
    }
}
