//! CDR deserialization (rmw's, through r2r, as the replay reads bag messages)
//! of every input message type: sensor_msgs/Image, sensor_msgs/JointState,
//! std_msgs/String and rosgraph_msgs/Clock. Any bytes either fail to deserialize or give
//! a message whose serialization deserializes and serializes to the same bytes; and each
//! such message then goes the node's way in (image decoding, joint matching, the
//! instruction, the clock) without panicking. Needs the ROS prefix: build with
//! `--features ros` after sourcing scripts/env.sh.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use r2r::{rosgraph_msgs::msg::Clock, sensor_msgs::msg::{Image, JointState}, std_msgs::msg::String as RosString, WrappedTypesupport};
use vla_controller::core::config::Config;
use vla_controller::core::inputs::ImageDecoder;
use vla_controller::core::inputs::joints::JointBuffer;
use vla_controller::core::inputs::tokenizer::Tokenizer;
use vla_controller::core::pipeline::{Events, Pipeline};
use vla_controller::policy::fake::FakePolicy;
use vla_controller::policy::PolicyMeta;
use vla_controller::ros::msgs;

/// Deserializes as the replay does, and checks the round trip of what deserialized: its
/// bytes deserialize and serialize to the same bytes (compared as bytes: a NaN position
/// is not equal to itself as a value).
fn decode<T: WrappedTypesupport>(data: &[u8]) -> Option<T> {
    let msg = msgs::from_cdr::<T>(data).ok()?;
    let bytes = msg.to_serialized_bytes().expect("a deserialized message serializes");
    let again = T::from_serialized_bytes(&bytes).expect("serialized bytes deserialize");
    assert_eq!(again.to_serialized_bytes().expect("serializes"), bytes, "round trip");
    Some(msg)
}

/// The default configuration and a fake policy made for it.
fn setup() -> &'static (Config, PolicyMeta) {
    static SETUP: OnceLock<(Config, PolicyMeta)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let cfg = Config::default();
        let meta = FakePolicy::meta_for(&cfg, 4);
        (cfg, meta)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, data)) = data.split_first() else { return };
    let (cfg, meta) = setup();
    match kind % 4 {
        0 => {
            let Some(msg) = decode::<Image>(data) else { return };
            let image = msgs::camera_image(msg);
            if let Ok(rgb) = ImageDecoder::new(cfg, meta).decode(0, &image.raw()) {
                assert_eq!(rgb.len(), meta.cameras[0].input_len(), "the policy's size");
                assert_eq!(image.rgb().expect("decodable").dimensions(), (image.width, image.height));
            }
        }
        1 => {
            let Some(msg) = decode::<JointState>(data) else { return };
            let stamp = msgs::stamp_ns(&msg.header.stamp);
            let mut joints = JointBuffer::new(cfg.joint_names.clone());
            if joints.push(stamp, &msg.name, &msg.position).is_ok() {
                let q = joints.nearest(stamp, 0).expect("the state just stored");
                assert!(q.len() == cfg.joint_names.len() && q.iter().all(|v| v.is_finite()));
            }
        }
        2 => {
            let Some(msg) = decode::<RosString>(data) else { return };
            let tokenizer = meta.tokenizer.as_ref().map(|t| Tokenizer::new(t, None).expect("the fake policy's tokenizer"));
            let mut pipe = Pipeline::new(cfg, meta, tokenizer);
            let mut events = Events::new();
            pipe.on_instruction(&msg.data, &mut events);
            assert!(events.len() >= 2, "received, then used or rejected: {events:?}");
        }
        _ => {
            let Some(msg) = decode::<Clock>(data) else { return };
            // Seconds and nanoseconds as given, however many nanoseconds (not normalized).
            let (sec, nanosec) = (msg.clock.sec, msg.clock.nanosec);
            let ns = msgs::stamp_ns(&msg.clock);
            assert_eq!(i128::from(ns), i128::from(sec) * 1_000_000_000 + i128::from(nanosec), "the node's clock reads the message's time");
        }
    }
});
