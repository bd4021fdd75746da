//! The parameters: any YAML parameters file and any `-p name:=value` overrides, read as
//! the replay reads them and validated by `Config::from_params`. A refusal names the
//! parameter; an accepted configuration keeps every rule, survives a round trip through
//! its ROS parameter values, and runs: a pipeline and a driver with a fake policy made
//! for it take a few inputs and ticks without panicking and command within the limits.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vla_controller::core::config::yaml::{param_override, params_from_yaml};
use vla_controller::core::config::{Config, ParamValue, PARAMETERS};
use vla_controller::core::inputs::CameraImage;
use vla_controller::core::control::limits::JointLimits;
use vla_controller::driver::Driver;
use vla_controller::policy::fake::FakePolicy;
use vla_controller::policy::PolicyRunner;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The parameters file, then one `-p` override per line after a `---overrides` line.
    let (yaml, overrides) = text.split_once("\n---overrides\n").unwrap_or((text, ""));
    let Ok(mut params) = params_from_yaml(yaml, "vla_controller") else { return };
    for line in overrides.lines() {
        match param_override(line) {
            Ok((name, value)) => {
                params.insert(name, value);
            }
            Err(why) => assert!(why.contains(line) || why.contains("name:=value"), "{line:?}: {why}"),
        }
    }
    let cfg = match Config::from_params(&params) {
        Ok((cfg, _unknown)) => cfg,
        Err(e) => {
            let e = e.to_string();
            let named = PARAMETERS.iter().any(|p| e.starts_with(&format!("parameter `{}`", p.name)));
            assert!(named, "a refusal names a declared parameter: {e}");
            return;
        }
    };
    cfg.validate().expect("from_params validated it");
    let (again, unknown) = Config::from_params(&cfg.to_params()).expect("its own values are valid");
    assert!(unknown.is_empty());
    assert_eq!(again, cfg, "round trip through ROS parameter values");
    for spec in PARAMETERS.iter().filter(|p| p.runtime) {
        // A run-time parameter set again to its current value is accepted.
        let value: ParamValue = cfg.to_params()[spec.name].clone();
        assert_eq!(cfg.with_runtime_change(spec.name, &value).expect("unchanged value"), cfg);
    }
    run(&cfg);
});

/// A few camera sets, joint states and ticks through the driver with a fake policy made
/// for `cfg`: nothing panics, and every command is finite and within the limits.
fn run(cfg: &Config) {
    let policy: Arc<dyn PolicyRunner> = Arc::new(FakePolicy::new(FakePolicy::meta_for(cfg, 4)).expect("a valid tokenizer"));
    vla_controller::policy::check(policy.as_ref(), cfg, &cfg.policy_path).expect("the fake policy matches its configuration");
    let driver = Driver::new(cfg, policy, "/fuzz");
    let pipe = driver.pipeline(cfg, JointLimits::from_config(cfg));
    driver.instruction(&pipe, "move above the red block");
    let (w, h) = (cfg.image_width.min(64), cfg.image_height.min(48));
    let names = cfg.joint_names.clone();
    let mid: Vec<f64> = cfg.joint_lower_limits.iter().zip(&cfg.joint_upper_limits).map(|(l, u)| l + (u - l) / 2.0).collect();
    let mut outputs = Vec::new();
    for k in 1..=4i64 {
        let now = 1_700_000_000_000_000_000 + k * 33_000_000;
        driver.joint_state(&pipe, now, now, &names, &mid);
        for cam in 0..cfg.camera_names.len() {
            // The configured size when it is small; a smaller one is rejected and counted.
            let image = CameraImage { stamp: now + cam as i64, frame_id: "cam".into(), width: w, height: h, encoding: "mono8".into(), step: w, data: vec![k as u8 * 40; (w * h) as usize].into() };
            for mut obs in driver.image(&pipe, cam, Arc::new(image), now) {
                if driver.prepare(&pipe, &mut obs) {
                    let result = driver.infer(&obs);
                    driver.apply(&pipe, &obs, &result, now, &mut outputs);
                }
            }
        }
        driver.tick(&pipe, now, &mut outputs);
    }
    for out in &outputs {
        if let vla_controller::driver::Output::Command { points, joint_names, .. } = out {
            // The arm's joints (without gripper_joints), each with its own limits.
            let index: Vec<usize> = joint_names.iter().map(|n| names.iter().position(|m| m == n).expect("a configured joint")).collect();
            for positions in points {
                for (&i, p) in index.iter().zip(positions) {
                    assert!(p.is_finite() && *p >= cfg.joint_lower_limits[i] && *p <= cfg.joint_upper_limits[i], "{positions:?}");
                }
            }
        }
    }
}
