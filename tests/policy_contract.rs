//! The policy runner against the real demo policy (policy/demo_policy.pt) through libtorch.

use std::path::Path;

use vla_controller::core::config::{Config, Device};
use vla_controller::policy::torch::TorchPolicy as Policy;
use vla_controller::policy::{Batch, BatchTokens, PolicyRunner, Priority};
use vla_controller::Error;

fn demo() -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/demo_policy.pt");
    Policy::load(&path, Device::Cpu).expect("the demo policy loads")
}

#[test]
fn demo_policy_matches_the_default_config_and_the_contract() {
    let p = demo();
    p.check(&Config::default()).expect("no differences");
    let m = p.meta();
    assert_eq!(m.camera_names(), ["main", "side", "top"]);
    assert_eq!(m.patch_grid, [12, 16]);

    let images: Vec<u8> = (0..p.image_len()).map(|i| (i * 7 % 256) as u8).collect();
    let state = [0.0, 1.2, -1.8, -0.9, 0.0, 0.04];
    let tokens = p.tokenizer().unwrap().encode("pick up the red block");
    let out = p.infer(&images, &state, &tokens, 0).unwrap();
    assert_eq!(out.actions.len(), m.chunk_length);
    assert!(out.actions.iter().all(|a| a.len() == 6 && a.iter().all(|v| v.is_finite())));
    // Token weights: a distribution over the real tokens, zero on padding.
    let real = tokens.mask.iter().filter(|m| **m).count();
    let sum: f32 = out.token_weights[..real].iter().sum();
    assert!((sum - 1.0).abs() < 1e-4, "token weights sum to {sum}");
    assert!(out.token_weights[real..].iter().all(|w| *w == 0.0));
    // Patch maps: one distribution per camera over the 16x12 grid.
    assert_eq!(out.patch_maps.len(), 3 * 12 * 16);
    for cam in out.patch_maps.chunks_exact(192) {
        let s: f32 = cam.iter().sum();
        assert!((s - 1.0).abs() < 1e-3, "patch map sums to {s}");
    }
    // Deterministic, and batched inference agrees with single inference.
    assert_eq!(p.infer(&images, &state, &tokens, 0).unwrap(), out);
    let twice = [images.clone(), images.clone()].concat();
    let batch = Batch { images: &twice, size: 2, state: &state, tokens: BatchTokens::Shared(&tokens), seed: 0, inpainting: None };
    let batch = p.infer_batch(&batch, Priority::Control).unwrap();
    for b in &batch {
        for (x, y) in b.actions.iter().flatten().zip(out.actions.iter().flatten()) {
            assert!((x - y).abs() < 1e-5);
        }
    }
    // The instruction matters.
    let other = p.infer(&images, &state, &p.tokenizer().unwrap().encode("把绿色圆柱体放到托盘右侧"), 0).unwrap();
    assert_ne!(other.actions, out.actions);
}

#[test]
fn mismatches_are_listed_by_name() {
    let p = demo();
    let cfg = Config {
        camera_names: vec!["side".into(), "main".into(), "top".into()],
        control_rate_hz: 30.0,
        ..Config::default()
    };
    let Err(Error::PolicyMismatch { differences, .. }) = p.check(&cfg) else {
        panic!("a mismatch must be refused");
    };
    assert_eq!(differences.len(), 2, "{differences:?}");
    assert!(differences[0].contains("cameras") && differences[0].contains("side"));
    assert!(differences[1].contains("control rate") && differences[1].contains("30"));
}

#[test]
fn wrong_input_sizes_are_errors_not_panics() {
    let p = demo();
    let tokens = p.tokenizer().unwrap().encode("x");
    let e = p.infer(&[0u8; 10], &[0.0; 6], &tokens, 0).unwrap_err();
    assert!(e.to_string().contains("image bytes"), "{e}");
    let e = p.infer(&vec![0u8; p.image_len()], &[0.0; 5], &tokens, 0).unwrap_err();
    assert!(e.to_string().contains("state values"), "{e}");
}

#[test]
fn missing_corrupt_and_gpu_less_loads_fail_clearly() {
    let e = Policy::load(Path::new("/nonexistent.pt"), Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("/nonexistent.pt") && e.contains("no such file"), "{e}");
    let dir = std::env::temp_dir().join(format!("vla-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.pt");
    std::fs::write(&bad, b"not a zip archive").unwrap();
    let e = Policy::load(&bad, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("not a loadable TorchScript module"), "{e}");
    if !tch::Cuda::is_available() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/demo_policy.pt");
        let e = Policy::load(&path, Device::Cuda(0)).err().unwrap().to_string();
        assert!(e.contains("cuda:0") && e.contains("not available"), "{e}");
    }
}
