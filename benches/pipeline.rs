//! `make bench`: time of each stage of the pipeline on this machine, with the demo policy.
//! Prints median and 99th percentile over many runs; see BENCHMARKS.md.

use std::sync::Arc;
use std::time::Instant;

use vla_controller::core::config::{Config, Device};
use vla_controller::core::control::limits::JointLimits;
use vla_controller::core::inputs::image::RawImage;
use vla_controller::core::inputs::{CameraImage, ImageDecoder};
use vla_controller::driver::Driver;
use vla_controller::explain::{self, Method, Settings};
use vla_controller::policy::{self, CheckAgainst, PolicyRunner};

fn measure(name: &str, runs: usize, mut f: impl FnMut()) {
    for _ in 0..runs.div_ceil(10) {
        f(); // warm-up
    }
    let t: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    report(name, t);
}

/// Median and 99th percentile of times in milliseconds.
fn report(name: &str, mut t: Vec<f64>) {
    t.sort_by(f64::total_cmp);
    let p = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    println!("{name:<48} median {:>9.4} ms   p99 {:>9.4} ms   ({} runs)", p(0.5), p(0.99), t.len());
}

fn main() {
    vla_controller::memory::keep_freed_memory(); // as the node does
    // VLA_BENCH_DEVICE=cuda runs the policy on a GPU (benches/gpu.sh);
    // VLA_BENCH_OCCLUSION_BATCHES=16,64,577 times occlusion at several batch sizes.
    let device = std::env::var("VLA_BENCH_DEVICE").map_or(Device::Cpu, |d| Device::parse(&d).expect("cpu, cuda or cuda:N"));
    let cfg = Config { policy_path: "policy/demo_policy.pt".into(), device, ..Config::default() };
    let occlusion_batches: Vec<usize> = std::env::var("VLA_BENCH_OCCLUSION_BATCHES").map_or(vec![cfg.occlusion_batch], |v| {
        v.split(',').map(|b| b.trim().parse().expect("batch sizes, comma-separated")).collect()
    });
    // Loaded and checked as the node does (torch_threads included).
    let policy = Arc::new(policy::load(&cfg, CheckAgainst::Config).expect("the demo policy matches the default config"));
    let meta = policy.meta().clone();
    println!("device: {}, torch threads: {}", cfg.device, tch::get_num_threads());

    let (w, h) = (cfg.image_width, cfg.image_height);
    let data: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    let raw = RawImage { width: w, height: h, encoding: "rgb8", step: w * 3, data: &data };
    let frame = |stamp: i64| {
        Arc::new(CameraImage {
            stamp,
            frame_id: "camera".into(),
            width: w,
            height: h,
            encoding: "rgb8".into(),
            step: w * 3,
            data: data.clone().into(),
        })
    };
    let decoder = ImageDecoder::new(&cfg, &meta);
    measure("decode + resize one 640x480 rgb8 image", 500, || {
        std::hint::black_box(decoder.decode(0, &raw).unwrap());
    });

    // The pipeline through the driver, as the node runs it (counters included).
    let driver = Driver::new(&cfg, policy.clone(), "/vla_controller");
    let core = driver.pipeline(&cfg, JointLimits::from_config(&cfg));
    driver.instruction(&core, "pick up the red block");
    let names = cfg.joint_names.clone();
    let q = vec![0.0, 1.2, -1.8, -0.9, 0.0, 0.04];
    let ms = 1_000_000i64;
    // Fill the pipeline so that ticks run the full path (ensembling, safety filter).
    let mut obs = Vec::new();
    for k in 0..10i64 {
        let t = k * 33 * ms;
        driver.joint_state(&core, t, t, &names, &q);
        for cam in 0..3 {
            obs.extend(driver.image(&core, cam, frame(t + cam as i64 * ms), t));
        }
    }
    let o = obs.last().expect("observations").clone();
    let result = policy.infer(&o.images, &o.state, &o.tokens, 0);
    let out = result.as_ref().expect("the demo policy runs");
    let mut now = 330 * ms;
    measure("policy forward pass (batch 1)", 200, || {
        std::hint::black_box(policy.infer(&o.images, &o.state, &o.tokens, 0).unwrap());
    });
    // Once per camera set, as in the node: by then the caches hold other work's data.
    let paced: Vec<f64> = (0..100)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(33));
            let t0 = Instant::now();
            std::hint::black_box(policy.infer(&o.images, &o.state, &o.tokens, 0).unwrap());
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    report("policy forward pass (batch 1), once every 33 ms", paced);
    let period = cfg.control_period_ns();
    let mut k = 0u64;
    let mut outputs = Vec::new();
    measure("joint state + control tick (ensemble, safety filter)", 20_000, || {
        // Every tick a joint state, every other tick a new chunk (inference at ~25 Hz).
        driver.joint_state(&core, now, now, &names, &q);
        if k % 2 == 0 {
            driver.apply(&core, &o, &result, now, &mut outputs);
        }
        std::hint::black_box(driver.tick(&core, now, &mut outputs));
        outputs.clear();
        now += period;
        k += 1;
    });
    let mut t = now + 1000 * ms;
    measure("camera set: 3 decodes + synchronizer + observation", 300, || {
        driver.joint_state(&core, t, t, &names, &q);
        for cam in 0..3 {
            std::hint::black_box(driver.image(&core, cam, frame(t + cam as i64 * ms), t));
        }
        t += 33 * ms;
    });

    // Explanations of one frame: the four images from the policy's own maps (render
    // only), and the occlusion grids (1 + 3 x 192 inputs).
    let attention = Settings { method: Method::PolicyAttention, ..Settings::from_config(&cfg) };
    measure("render all four explanation images (policy_attention)", 200, || {
        std::hint::black_box(explain::explain(policy.as_ref(), &o, out, &attention).unwrap());
    });
    let cam = o.cameras[0].rgb().unwrap();
    measure("  of which: one 640x480 overlay", 200, || {
        std::hint::black_box(explain::render::overlay(&cam, &out.patch_maps[..192], 12, 16, 0.4));
    });
    let pieces = &o.tokens.pieces;
    measure("  of which: the language heatmap", 200, || {
        std::hint::black_box(explain::render::language_heatmap(pieces, &out.token_weights, 0.3));
    });
    for batch in occlusion_batches {
        measure(&format!("occlusion grids, 1 + 3x192 inputs, batches of {batch}"), 5, || {
            std::hint::black_box(explain::occlusion::grids(policy.as_ref(), &o, batch).unwrap());
        });
    }
}
