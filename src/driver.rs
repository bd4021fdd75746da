//! The one driver of the pipeline, for the live node and the bag replay alike: a camera
//! set in, inference, the chunk handed to the pipeline, the explanation, and every
//! output as a value ([`Output`]). The two adapters differ only in how they schedule
//! these steps (threads and timers, or the recording's clock) and where the outputs go
//! (publishers, or a bag writer).
//!
//! The pipeline is passed in behind a mutex, which the node shares between its threads
//! and the replay holds alone; every step counts what it did in the driver's stats.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::core::config::{CommandType, Config};
use crate::core::contract::PolicyKind;
use crate::core::inputs::{CameraImage, ImageDecoder};
use crate::core::pipeline::{ControlState, Events, Observation, Pipeline};
use crate::core::stats::{self, SharedStats, Stats};
use crate::core::topics::{InputNames, NODE_NAME};
use crate::error::Result;
use crate::explain::{self, Explanation, Settings};
use crate::policy::flow::Inpainting;
use crate::policy::{Batch, BatchTokens, PolicyOutput, PolicyRunner, Priority};

/// What the node sends out, as plain values; `crate::ros::msgs` turns them into messages.
#[derive(Debug, Clone)]
pub enum Output {
    /// The command of one control tick, in `joint_names` order.
    Command { stamp: i64, positions: Vec<f64>, kind: CommandType, joint_names: Arc<[String]>, period_ns: i64 },
    /// The smoothed action about to be executed, before the safety filter.
    Predicted { stamp: i64, positions: Vec<f64>, joint_names: Arc<[String]> },
    /// The stamp of the newest camera set whose chunk a command uses.
    CommandSource { set_stamp: i64 },
    /// A new chunk as it will run: a command per tick from `start`, before smoothing.
    Chunk { start: i64, set_stamp: i64, commands: Vec<Vec<f64>>, joint_names: Arc<[String]>, period_ns: i64 },
    /// One explained inference.
    Explanation(Box<Explained>),
    /// The node's status: its state and every counter.
    Diagnostics(Status),
}

/// An inference with its explanation.
#[derive(Debug, Clone)]
pub struct Explained {
    pub obs: Observation,
    pub explanation: Explanation,
    /// The language heatmap's `attention_threshold`, published with the token weights.
    pub threshold: f32,
    pub camera_names: Arc<[String]>,
}

/// One diagnostic status.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub stamp: i64,
    /// `<node's full name>: pipeline`.
    pub name: String,
    /// 0 OK, 1 WARN, 2 ERROR.
    pub level: u8,
    pub message: String,
    pub values: Vec<(String, String)>,
}

pub struct Driver {
    policy: Arc<dyn PolicyRunner>,
    decoder: ImageDecoder,
    names: InputNames,
    joint_names: Arc<[String]>,
    camera_names: Arc<[String]>,
    command_type: CommandType,
    period_ns: i64,
    dry_run: bool,
    /// Real-time chunking's largest guidance weight.
    max_guidance_weight: f64,
    status_name: String,
    stats: SharedStats,
}

fn lock(pipe: &Mutex<Pipeline>) -> MutexGuard<'_, Pipeline> {
    pipe.lock().unwrap_or_else(|e| e.into_inner())
}

impl Driver {
    /// A driver for `cfg` and a policy that passed its checks against it.
    /// `node_name` is the node's fully qualified name, for /diagnostics.
    pub fn new(cfg: &Config, policy: Arc<dyn PolicyRunner>, node_name: &str) -> Self {
        if cfg.dry_run {
            tracing::warn!("dry_run: computing and explaining, publishing no commands");
        }
        Driver {
            decoder: ImageDecoder::new(cfg, policy.meta()),
            policy,
            names: InputNames::new(&cfg.camera_names),
            joint_names: cfg.joint_names.clone().into(),
            camera_names: cfg.camera_names.clone().into(),
            command_type: cfg.command_type,
            period_ns: cfg.control_period_ns(),
            dry_run: cfg.dry_run,
            max_guidance_weight: cfg.rtc_max_guidance_weight,
            status_name: format!("{node_name}: pipeline"),
            stats: SharedStats::default(),
        }
    }

    /// The full name of a node in the root namespace, as the replay names its status.
    pub fn default_node_name() -> String {
        format!("/{NODE_NAME}")
    }

    /// A new pipeline for `cfg` (the configuration the driver was made with) and the
    /// driver's policy.
    pub fn pipeline(&self, cfg: &Config) -> Mutex<Pipeline> {
        Mutex::new(Pipeline::new(cfg, self.policy.meta(), self.policy.tokenizer().cloned()))
    }

    pub fn stats(&self) -> &SharedStats {
        &self.stats
    }

    pub fn policy(&self) -> &Arc<dyn PolicyRunner> {
        &self.policy
    }

    fn count(&self, events: &mut Events) {
        stats::lock(&self.stats).record(&self.names, events);
    }

    fn stats_mut(&self) -> MutexGuard<'_, Stats> {
        stats::lock(&self.stats)
    }

    /// A camera image: decoded outside the pipeline's lock (the node calls this on the
    /// thread that received it), then synchronized. Returns the observations it
    /// completed.
    pub fn image(&self, pipe: &Mutex<Pipeline>, camera: usize, image: Arc<CameraImage>, now: i64) -> Vec<Observation> {
        let decoded = self.decoder.decode(camera, &image.raw());
        let mut events = Events::new();
        let observations = lock(pipe).on_image(camera, image, now, decoded, &mut events);
        self.count(&mut events);
        observations
    }

    pub fn joint_state(&self, pipe: &Mutex<Pipeline>, stamp: i64, now: i64, names: &[String], positions: &[f64]) {
        let mut events = Events::new();
        lock(pipe).on_joint_state(stamp, now, names, positions, &mut events);
        self.count(&mut events);
    }

    pub fn instruction(&self, pipe: &Mutex<Pipeline>, text: &str) {
        let mut events = Events::new();
        lock(pipe).on_instruction(text, &mut events);
        self.count(&mut events);
    }

    /// Whether to infer `obs` now (real-time chunking waits for its execution horizon,
    /// counted); prepares what of the running chunk the inference keeps.
    pub fn prepare(&self, pipe: &Mutex<Pipeline>, obs: &mut Observation) -> bool {
        let mut events = Events::new();
        let infer = lock(pipe).prepare(obs, &mut events);
        self.count(&mut events);
        infer
    }

    /// One inference on the control path, timed and counted; a flow-matching policy
    /// starts from noise seeded with the camera set's stamp (and, with real-time
    /// chunking, is steered towards the running chunk). A chunk with a non-finite action
    /// is an error, whatever the runner.
    pub fn infer(&self, obs: &Observation) -> Result<PolicyOutput> {
        let t0 = Instant::now();
        let inpainting = match (self.policy.meta().kind, &obs.inpaint) {
            (PolicyKind::Flow(spec), Some(inpaint)) if !inpaint.prefix.is_empty() => {
                Some(Inpainting::new(self.policy.meta(), spec, inpaint, self.max_guidance_weight))
            }
            _ => None,
        };
        let batch = Batch {
            images: &obs.images,
            size: 1,
            state: &obs.state,
            tokens: BatchTokens::Shared(&obs.tokens),
            seed: obs.stamp as u64,
            inpainting: inpainting.as_ref(),
        };
        let result = self
            .policy
            .infer_batch(&batch, Priority::Control)
            .and_then(|mut out| out.pop().ok_or_else(|| crate::Error::Inference("no output for a batch of one".into())))
            .and_then(PolicyOutput::finite);
        match &result {
            Ok(_) => self.stats_mut().inferred(t0.elapsed().as_secs_f64() * 1e3),
            Err(e) => self.stats_mut().inference_failed(&e.to_string()),
        }
        result
    }

    /// Hands an inference's result to the pipeline at `now`: the chunk (then in
    /// `outputs` as it will run), or the failure (the node holds until the next good
    /// chunk).
    pub fn apply(&self, pipe: &Mutex<Pipeline>, obs: &Observation, result: &Result<PolicyOutput>, now: i64, outputs: &mut Vec<Output>) {
        let mut events = Events::new();
        match result {
            Ok(out) => {
                if let Some(chunk) = lock(pipe).on_chunk(obs, &out.actions, now, &mut events) {
                    outputs.push(Output::Chunk {
                        start: chunk.start,
                        set_stamp: obs.stamp,
                        commands: chunk.commands,
                        joint_names: self.joint_names.clone(),
                        period_ns: self.period_ns,
                    });
                }
            }
            Err(e) => lock(pipe).on_policy_error(&e.to_string()),
        }
        self.count(&mut events);
    }

    /// Explains an inference (timed and counted); `None` when it failed (counted and
    /// logged).
    pub fn explain(&self, obs: Observation, out: &PolicyOutput, settings: &Settings) -> Option<Output> {
        let t0 = Instant::now();
        match explain::explain(self.policy.as_ref(), &obs, out, settings) {
            Ok(explanation) => {
                self.stats_mut().explained(t0.elapsed().as_secs_f64() * 1e3);
                Some(Output::Explanation(Box::new(Explained {
                    obs,
                    explanation,
                    threshold: settings.threshold,
                    camera_names: self.camera_names.clone(),
                })))
            }
            Err(e) => {
                self.stats_mut().explain_errors += 1;
                tracing::warn!(error = %e, "explanation failed");
                None
            }
        }
    }

    /// One control tick at `now`: its outputs go to `outputs`. Returns the state when it
    /// changed (the node then sends its status at once).
    pub fn tick(&self, pipe: &Mutex<Pipeline>, now: i64, outputs: &mut Vec<Output>) -> Option<ControlState> {
        let mut events = Events::new();
        let out = lock(pipe).tick(now, &mut events);
        self.count(&mut events);
        if out.state_changed {
            match out.state.level() {
                0 => tracing::info!("{}", out.state),
                _ => tracing::warn!("{}", out.state),
            }
        }
        if !self.dry_run {
            if let Some(positions) = out.command {
                outputs.push(Output::Command {
                    stamp: now,
                    positions,
                    kind: self.command_type,
                    joint_names: self.joint_names.clone(),
                    period_ns: self.period_ns,
                });
            }
            if let Some(set_stamp) = out.source {
                outputs.push(Output::CommandSource { set_stamp });
            }
        }
        if let Some(positions) = out.target {
            outputs.push(Output::Predicted { stamp: now, positions, joint_names: self.joint_names.clone() });
        }
        out.state_changed.then_some(out.state)
    }

    /// The node's status at `now`.
    pub fn diagnostics(&self, pipe: &Mutex<Pipeline>, now: i64) -> Output {
        let state = lock(pipe).state().clone();
        let message = state.to_string();
        Output::Diagnostics(Status {
            stamp: now,
            name: self.status_name.clone(),
            level: state.level(),
            values: self.stats_mut().key_values(&message),
            message,
        })
    }

    /// Counts what still waits in the synchronizer as dropped with `reason`.
    pub fn drain(&self, pipe: &Mutex<Pipeline>, reason: &'static str) {
        let mut events = Events::new();
        lock(pipe).drain(reason, &mut events);
        self.count(&mut events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::{Method, Smoothing};
    use crate::core::contract::PolicyMeta;
    use crate::policy::fake::{Fault, FakePolicy};

    const MS: i64 = 1_000_000;

    fn meta() -> PolicyMeta {
        PolicyMeta::parse(
            r#"{"contract_version": 1, "name": "fake", "camera_names": ["main", "side"], "image_height": 12,
            "image_width": 16, "patch_grid": [3, 4], "joint_names": ["a", "b"], "action_dim": 2, "chunk_length": 5,
            "control_rate_hz": 100.0, "tokenizer": {"type": "char", "vocab": "abcdefghijklmnopqrstuvwxyz ",
            "max_length": 16, "pad_id": 0, "unk_id": 1, "lowercase": true},
            "normalization": {"state_mean": [0, 0], "state_std": [1, 1], "action_mean": [0, 0], "action_std": [1, 1]}}"#,
        )
        .unwrap()
    }

    fn config() -> Config {
        Config {
            camera_names: vec!["main".into(), "side".into()],
            image_width: 32,
            image_height: 24,
            joint_names: vec!["a".into(), "b".into()],
            control_rate_hz: 100.0,
            joint_lower_limits: vec![-1.0, -1.0],
            joint_upper_limits: vec![1.0, 1.0],
            max_step_per_tick: vec![0.1, 0.1],
            ..Config::default()
        }
        .with_smoothing(Smoothing::None)
    }

    fn image(cam: usize, t: i64) -> Arc<CameraImage> {
        let data: Vec<u8> = (0..32 * 24 * 3).map(|i| ((i * (cam + 3)) % 251) as u8).collect();
        Arc::new(CameraImage { stamp: t, frame_id: format!("cam{cam}"), width: 32, height: 24, encoding: "rgb8".into(), step: 96, data: data.into() })
    }

    struct Rig {
        driver: Driver,
        pipe: Mutex<Pipeline>,
    }

    impl Rig {
        fn new(cfg: Config, fault: Fault) -> Self {
            let policy = Arc::new(FakePolicy::new(meta()).unwrap().with_fault(fault));
            let driver = Driver::new(&cfg, policy, "/test");
            Rig { pipe: driver.pipeline(&cfg), driver }
        }

        /// Inputs at `t`, every completed set inferred and applied, then one tick.
        fn step(&self, t: i64, outputs: &mut Vec<Output>) -> Vec<(Observation, PolicyOutput)> {
            let mut inferred = Vec::new();
            self.driver.joint_state(&self.pipe, t, t, &["a".into(), "b".into()], &[0.0, 0.0]);
            for cam in 0..2 {
                for mut obs in self.driver.image(&self.pipe, cam, image(cam, t), t) {
                    if !self.driver.prepare(&self.pipe, &mut obs) {
                        continue;
                    }
                    let result = self.driver.infer(&obs);
                    self.driver.apply(&self.pipe, &obs, &result, t, outputs);
                    if let Ok(out) = result {
                        inferred.push((obs, out));
                    }
                }
            }
            self.driver.tick(&self.pipe, t, outputs);
            inferred
        }
    }

    #[test]
    fn a_camera_set_becomes_commands_an_explanation_and_a_status() {
        let rig = Rig::new(config(), Fault::None);
        rig.driver.instruction(&rig.pipe, "go left");
        let mut outputs = Vec::new();
        let mut inferred = Vec::new();
        for k in 0..10 {
            inferred.extend(rig.step(k * 10 * MS, &mut outputs));
        }
        let commands: Vec<&Vec<f64>> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Command { positions, kind, .. } => {
                    assert_eq!(*kind, CommandType::Float64MultiArray);
                    Some(positions)
                }
                _ => None,
            })
            .collect();
        assert!(!commands.is_empty() && !inferred.is_empty());
        assert!(outputs.iter().any(|o| matches!(o, Output::Predicted { .. })));
        assert!(outputs.iter().any(|o| matches!(o, Output::CommandSource { .. })));

        let (obs, out) = inferred.pop().unwrap();
        let settings = Settings { threshold: 0.3, alpha: 0.4, method: Method::Occlusion, occlusion_batch: 4 };
        let Some(Output::Explanation(e)) = rig.driver.explain(obs, &out, &settings) else {
            panic!("an explanation");
        };
        let Explained { explanation, camera_names, .. } = *e;
        assert_eq!(&*camera_names, ["main", "side"]);
        assert_eq!(explanation.grids.len(), 2);
        assert!(explanation.grids.iter().all(|g| g.len() == 12 && g.iter().any(|v| *v > 0.0)), "occlusion moves the fake chunk");
        assert_eq!(explanation.overlays[0].dimensions(), (32, 24));

        let Output::Diagnostics(status) = rig.driver.diagnostics(&rig.pipe, 0) else { panic!() };
        assert_eq!((status.name.as_str(), status.level), ("/test: pipeline", 0));
        let value = |k: &str| status.values.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(value("inferences"), Some(inferred.len().saturating_add(1).to_string()));
        assert_eq!(value("explanations").as_deref(), Some("1"));
        assert_eq!(value("received/camera/main/image_raw").as_deref(), Some("10"));
    }

    #[test]
    fn dry_run_sends_no_commands_and_a_failing_policy_holds() {
        let rig = Rig::new(Config { dry_run: true, ..config() }, Fault::None);
        rig.driver.instruction(&rig.pipe, "go");
        let mut outputs = Vec::new();
        for k in 0..10 {
            rig.step(k * 10 * MS, &mut outputs);
        }
        assert!(outputs.iter().any(|o| matches!(o, Output::Predicted { .. })));
        assert!(!outputs.iter().any(|o| matches!(o, Output::Command { .. } | Output::CommandSource { .. })));

        for fault in [Fault::Error, Fault::NonFinite] {
            let rig = Rig::new(config(), fault);
            rig.driver.instruction(&rig.pipe, "go");
            let mut outputs = Vec::new();
            for k in 0..10 {
                assert!(rig.step(k * 10 * MS, &mut outputs).is_empty());
            }
            assert!(!outputs.iter().any(|o| matches!(o, Output::Command { .. })));
            assert!(matches!(lock(&rig.pipe).state(), ControlState::PolicyFault(_)), "{fault:?}");
            assert!(stats::lock(rig.driver.stats()).inference_errors > 0);
        }
    }

    #[test]
    fn real_time_chunking_waits_for_the_horizon_and_keeps_the_running_chunk() {
        // The fake policy as a flow-matching one: its chunk ramps over 5 actions.
        let json = r#"{"contract_version": 2, "name": "fake flow", "kind": "flow",
            "cameras": [{"name": "main", "width": 16, "height": 12}, {"name": "side", "width": 16, "height": 12}],
            "state_names": ["a", "b"], "action_names": ["a", "b"], "action_mode": "absolute", "chunk_length": 5,
            "control_rate_hz": 100.0, "tokenizer": null, "patch_grid": [3, 4],
            "flow": {"num_steps": 10, "time": "noise_at_one", "guidance": "autograd"},
            "normalization": {"state_mean": [0, 0], "state_std": [1, 1], "action_mean": [0, 0], "action_std": [1, 1]}}"#;
        let meta = PolicyMeta::parse(json).unwrap();
        let rtc = Smoothing::Rtc { execution_horizon: 2, max_guidance_weight: 5.0, fixed_delay: 1 };
        let cfg = config().with_smoothing(rtc);
        assert!(meta.differences(&cfg).is_empty(), "{:?}", meta.differences(&cfg));
        let driver = Driver::new(&cfg, Arc::new(FakePolicy::new(meta).unwrap()), "/test");
        let rig = Rig { pipe: driver.pipeline(&cfg), driver };
        let mut outputs = Vec::new();
        let mut inferred = Vec::new();
        for k in 0..30 {
            inferred.extend(rig.step(k * 10 * MS, &mut outputs));
        }
        let st = stats::lock(rig.driver.stats());
        assert!(st.rtc_waits > 0 && st.inferences as usize == inferred.len() && st.observations > st.inferences, "{st:?}");
        assert_eq!(st.inference_errors, 0);
        drop(st);
        // Each chunk after the first starts with the running chunk's action for its
        // first tick, exactly (the frozen prefix of one tick).
        for w in inferred.windows(2) {
            let ((o1, c1), (o2, c2)) = (&w[0], &w[1]);
            let offset = ((o2.arrival - o1.arrival) / (10 * MS)) as usize;
            assert!(o2.inpaint.as_ref().is_some_and(|i| i.delay == 1 && !i.prefix.is_empty()));
            assert_eq!(c2.actions[0], c1.actions[offset], "chunk seam");
        }
        assert!(outputs.iter().any(|o| matches!(o, Output::Command { .. })));
    }
}
