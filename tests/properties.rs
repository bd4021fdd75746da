//! Property tests and fuzzing (proptest) of everything that takes input from outside or
//! decides a command. Each property runs `PROPTEST_CASES` cases (256 by default, what
//! `make test` runs); for a longer fuzzing session:
//!
//!     PROPTEST_CASES=100000 cargo test --release --test properties

use std::sync::Arc;

use proptest::prelude::*;
use r2r::WrappedTypesupport;
use vla_controller::core::config::{Config, Smoothing};
use vla_controller::core::contract::PolicyMeta;
use vla_controller::core::control::safety::SafetyFilter;
use vla_controller::core::inputs::image::{decode_resize, RawImage};
use vla_controller::core::inputs::tokenizer::Tokenizer;
use vla_controller::core::inputs::{CameraImage, ImageDecoder};
use vla_controller::core::pipeline::{ControlState, Events, Pipeline};
use vla_controller::core::stats::Stats;
use vla_controller::core::sync::ApproximateTimeSync;
use vla_controller::core::topics::InputNames;

const LOWER: [f64; 3] = [-1.0, 0.0, -0.5];
const UPPER: [f64; 3] = [1.0, 2.0, 0.5];
const STEP: [f64; 3] = [0.1, 0.05, 0.2];

/// Any f64 the policy might produce, NaN and infinities included.
fn wild() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -10.0f64..10.0,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => any::<f64>(),
    ]
}

proptest! {
    /// Whatever the target, a command is within the limits and, from a previous
    /// command within the limits, moves no joint by more than its step; a non-finite
    /// target is refused.
    #[test]
    fn safety_filter_bounds_every_command(target in prop::collection::vec(wild(), 3), prev in prop::collection::vec(-1.0f64..1.0, 3)) {
        let f = SafetyFilter::new(LOWER.to_vec(), UPPER.to_vec(), STEP.to_vec());
        let prev: Vec<f64> = prev.iter().enumerate().map(|(i, p)| p.clamp(LOWER[i], UPPER[i])).collect();
        match f.apply(&target, &prev) {
            Ok((cmd, _)) => {
                prop_assert!(target.iter().all(|t| t.is_finite()));
                for i in 0..3 {
                    prop_assert!(cmd[i] >= LOWER[i] && cmd[i] <= UPPER[i], "joint {} at {}", i, cmd[i]);
                    prop_assert!((cmd[i] - prev[i]).abs() <= STEP[i] + 1e-12, "joint {} stepped {}", i, cmd[i] - prev[i]);
                }
            }
            Err(_) => prop_assert!(target.iter().any(|t| !t.is_finite())),
        }
    }
}

fn meta() -> PolicyMeta {
    PolicyMeta::parse(
        r#"{"contract_version": 1, "name": "properties", "camera_names": ["a", "b"], "image_height": 2, "image_width": 2,
        "patch_grid": [12, 16], "joint_names": ["j0", "j1", "j2"], "action_dim": 3, "chunk_length": 8, "control_rate_hz": 100.0,
        "tokenizer": {"type": "char", "vocab": "abc", "max_length": 8, "pad_id": 0, "unk_id": 1, "lowercase": true},
        "normalization": {"state_mean": [0, 0, 0], "state_std": [1, 1, 1], "action_mean": [0, 0, 0], "action_std": [1, 1, 1]}}"#,
    )
    .unwrap()
}

fn tokenizer() -> Tokenizer {
    Tokenizer::new(meta().tokenizer.as_ref().unwrap(), None).unwrap()
}

fn config(smoothing: Smoothing) -> Config {
    Config {
        camera_names: vec!["a".into(), "b".into()],
        image_width: 2,
        image_height: 2,
        joint_names: vec!["j0".into(), "j1".into(), "j2".into()],
        control_rate_hz: 100.0,
        joint_lower_limits: LOWER.to_vec(),
        joint_upper_limits: UPPER.to_vec(),
        max_step_per_tick: STEP.to_vec(),
        camera_timeout_s: 0.05,
        joint_state_timeout_s: 0.05,
        ..Config::default()
    }
    .with_smoothing(smoothing)
}

#[derive(Debug, Clone)]
enum Event {
    /// Both cameras and a joint state arrive.
    Inputs,
    /// Camera b is silent this tick.
    SilentCamera,
    /// A chunk of these actions arrives.
    Chunk(Vec<Vec<f64>>),
    PolicyError,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::Inputs),
        1 => Just(Event::SilentCamera),
        3 => prop::collection::vec(prop::collection::vec(wild(), 3), 1..8).prop_map(Event::Chunk),
        1 => Just(Event::PolicyError),
    ]
}

fn smoothing() -> impl Strategy<Value = Smoothing> {
    prop_oneof![
        (0.0f64..1.0).prop_map(|m| Smoothing::TemporalEnsemble { m }),
        (0.01f64..=1.0).prop_map(|alpha| Smoothing::Exponential { alpha }),
        Just(Smoothing::None),
    ]
}

proptest! {
    /// The whole control path, driven by arbitrary chunks (NaN, infinities, anything),
    /// silent cameras and policy failures: every command is within the limits, moves no
    /// joint by more than its step from the previous one, and while holding it repeats
    /// the previous command exactly.
    #[test]
    fn commands_stay_safe_and_hold_means_hold(events in prop::collection::vec(event(), 1..120), s in smoothing()) {
        let (cfg, m) = (config(s), meta());
        let mut core = Pipeline::new(&cfg, &m, Some(tokenizer()));
        let decoder = ImageDecoder::new(&cfg, &m);
        let mut ev = Events::new();
        core.on_instruction("abc", &mut ev);
        let names: Vec<String> = cfg.joint_names.clone();
        let mut previous: Option<Vec<f64>> = None;
        for (k, e) in events.iter().enumerate() {
            let t = k as i64 * 10_000_000;
            let image = |cam: u8| {
                let img = Arc::new(CameraImage { stamp: t + cam as i64, frame_id: String::new(), width: 2, height: 2,
                    encoding: "mono8".into(), step: 2, data: vec![cam; 4].into() });
                let d = decoder.decode(cam as usize, &img.raw());
                (img, d)
            };
            match e {
                Event::Inputs | Event::SilentCamera => {
                    core.on_joint_state(t, t, &names, &[0.0, 1.0, 0.0], &mut ev);
                    let (img, d) = image(0);
                    core.on_image(0, img, t, d, &mut ev);
                    if matches!(e, Event::Inputs) {
                        let (img, d) = image(1);
                        core.on_image(1, img, t, d, &mut ev);
                    }
                }
                Event::Chunk(actions) => core.on_commands(t, t, 1, actions, &mut ev),
                Event::PolicyError => core.on_policy_error("property test"),
            }
            let out = core.tick(t, &mut ev);
            ev.clear();
            if let Some(cmd) = &out.command {
                for i in 0..3 {
                    prop_assert!(cmd[i].is_finite() && cmd[i] >= LOWER[i] && cmd[i] <= UPPER[i], "{:?}", cmd);
                }
                if let Some(p) = &previous {
                    for i in 0..3 {
                        prop_assert!((cmd[i] - p[i]).abs() <= STEP[i] + 1e-12, "step {:?} -> {:?}", p, cmd);
                    }
                    if out.state.is_hold() {
                        prop_assert_eq!(cmd, p, "held in {}", out.state);
                    }
                }
            }
            prop_assert!(out.command.is_some() || previous.is_none());
            if out.state == ControlState::Running {
                prop_assert!(out.command.is_some());
            }
            previous = out.command.clone();
        }
    }
}

proptest! {
    /// Fuzzing the image decoder: any header and data length either decodes to exactly
    /// the output size or is rejected; it never panics.
    #[test]
    fn fuzz_image_decoding(w in 0u32..40, h in 0u32..40, step in 0u32..200, len in 0usize..6000,
                           enc in prop::sample::select(vec!["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "yuv422", "", "rgb16"]),
                           ow in 1usize..20, oh in 1usize..20) {
        let data = vec![7u8; len];
        let raw = RawImage { width: w, height: h, encoding: enc, step, data: &data };
        let mut out = Vec::new();
        match decode_resize(&raw, (w, h), ow, oh, &mut out) {
            Ok(()) => {
                prop_assert_eq!(out.len(), ow * oh * 3);
                prop_assert!(out.iter().all(|v| *v == 7));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Fuzzing the synchronizer with arbitrary arrival orders, duplicates and stamps going
    /// backwards: it never panics, sets never exceed the interval, and every message is
    /// in a set, dropped with a reason, or still pending.
    #[test]
    fn fuzz_synchronizer(msgs in prop::collection::vec((0usize..3, 0i64..2_000), 0..300), queue in 1usize..12, interval in 0i64..200) {
        let mut sync = ApproximateTimeSync::new(3, queue, interval, 0.1);
        let (mut in_sets, mut dropped) = (0usize, 0usize);
        for (topic, stamp) in &msgs {
            let out = sync.add(*topic, *stamp, ());
            for set in &out.sets {
                let stamps: Vec<i64> = set.iter().map(|(s, _)| *s).collect();
                prop_assert!(stamps.iter().max().unwrap() - stamps.iter().min().unwrap() <= interval);
                in_sets += set.len();
            }
            dropped += out.dropped.len();
        }
        prop_assert_eq!(in_sets + dropped + sync.pending(), msgs.len());
    }

    /// Fuzzing the tokenizer with arbitrary Unicode: always max_length ids, masks
    /// matching, and nothing lost without being counted.
    #[test]
    fn fuzz_tokenizer(text in "(?s).{0,80}") {
        let t = tokenizer().encode(&text);
        prop_assert_eq!(t.ids.len(), 8);
        prop_assert_eq!(t.mask.len(), 8);
        let real = t.mask.iter().filter(|m| **m).count();
        prop_assert_eq!(real + t.truncated, text.trim().chars().count());
    }

    /// Fuzzing message deserialization (rmw's CDR, through r2r) with arbitrary bytes, as a
    /// corrupt bag or a hostile peer would send them: errors, never a crash.
    #[test]
    fn fuzz_cdr_decoding(data in prop::collection::vec(any::<u8>(), 0..512), header in any::<bool>()) {
        let mut bytes = if header { vec![0u8, 1, 0, 0] } else { Vec::new() };
        bytes.extend(data);
        let _ = r2r::sensor_msgs::msg::Image::from_serialized_bytes(&bytes);
        let _ = r2r::sensor_msgs::msg::JointState::from_serialized_bytes(&bytes);
        let _ = r2r::std_msgs::msg::String::from_serialized_bytes(&bytes);
    }

    /// Fuzzing joint states: any names and positions are stored or rejected with a reason.
    #[test]
    fn fuzz_joint_states(names in prop::collection::vec(prop::sample::select(vec!["j0", "j1", "j2", "x", ""]), 0..6),
                         positions in prop::collection::vec(wild(), 0..6)) {
        let cfg = config(Smoothing::None);
        let mut core = Pipeline::new(&cfg, &meta(), Some(tokenizer()));
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut ev = Events::new();
        core.on_joint_state(1, 1, &names, &positions, &mut ev);
        let mut st = Stats::default();
        st.record(&InputNames::new(&cfg.camera_names), &mut ev);
        prop_assert_eq!(st.used.get("joint_states").copied().unwrap_or(0) + st.rejected_total(), 1);
    }
}
