//! The node's health by concern, each one diagnostic status as rqt_runtime_monitor shows
//! them: camera synchronization (the stamp spread within sets), input rates, and
//! inference latency, over the last `diagnostics_window_s`, each with a level set by the
//! thresholds of the parameters file.

use crate::core::config::{secs_to_ns, Config};
use crate::core::window::Recent;

/// One concern's status: name suffix, level (0 OK, 1 WARN, 2 ERROR), message, values.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub concern: &'static str,
    pub level: u8,
    pub message: String,
    pub values: Vec<(String, String)>,
}

/// What an input is, for its rate threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Camera,
    JointStates,
}

/// The thresholds of the parameters file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub spread_warn_ns: i64,
    pub camera_rate_warn_hz: f64,
    pub joint_state_rate_warn_hz: f64,
    pub inference_warn_ms: f64,
    pub inference_error_ms: f64,
}

impl Thresholds {
    pub fn from_config(cfg: &Config) -> Self {
        Thresholds {
            spread_warn_ns: secs_to_ns(cfg.diagnostics_spread_warn_s),
            camera_rate_warn_hz: cfg.diagnostics_camera_rate_warn_hz,
            joint_state_rate_warn_hz: cfg.diagnostics_joint_state_rate_warn_hz,
            inference_warn_ms: cfg.diagnostics_inference_warn_ms,
            inference_error_ms: cfg.diagnostics_inference_error_ms,
        }
    }
}

fn ms(ns: f64) -> String {
    format!("{:.2}", ns / 1e6)
}

fn seconds(ns: i64) -> String {
    format!("{:.0} s", ns as f64 / 1e9)
}

/// Camera sync, input rates and inference, at `now`, for `inputs` (topic and kind).
pub fn checks(recent: &mut Recent, inputs: &[(String, Feed)], th: &Thresholds, now: i64) -> Vec<Check> {
    vec![camera_sync(recent, th, now), input_rates(recent, inputs, th, now), inference(recent, th, now)]
}

fn camera_sync(recent: &mut Recent, th: &Thresholds, now: i64) -> Check {
    let window = seconds(recent.span_ns());
    let sets = recent.spread.count(now);
    let q = |r: &mut Recent, q: f64| r.spread.quantile(now, q).unwrap_or(0.0);
    let (p50, p99, max) = (q(recent, 0.5), q(recent, 0.99), q(recent, 1.0));
    let (level, message) = if sets == 0 {
        (1, format!("no camera set in the last {window}"))
    } else if max > th.spread_warn_ns as f64 {
        (1, format!("stamp spread up to {} ms within a set (warn above {} ms)", ms(max), ms(th.spread_warn_ns as f64)))
    } else {
        (0, format!("stamp spread p99 {} ms", ms(p99)))
    };
    let values = vec![
        ("sets in window".into(), sets.to_string()),
        ("stamp spread p50 (ms)".into(), ms(p50)),
        ("stamp spread p99 (ms)".into(), ms(p99)),
        ("stamp spread max (ms)".into(), ms(max)),
        ("window".into(), window),
    ];
    Check { concern: "camera sync", level, message, values }
}

fn input_rates(recent: &mut Recent, inputs: &[(String, Feed)], th: &Thresholds, now: i64) -> Check {
    let mut level = 0;
    let mut slow = Vec::new();
    let mut values = Vec::new();
    for (topic, feed) in inputs {
        let rate = recent.rate_hz(topic, now);
        let warn = match feed {
            Feed::Camera => th.camera_rate_warn_hz,
            Feed::JointStates => th.joint_state_rate_warn_hz,
        };
        let l = if rate == 0.0 { 2 } else { u8::from(rate < warn) };
        if l > 0 {
            slow.push(format!("{topic} {rate:.1} Hz"));
        }
        level = level.max(l);
        values.push((format!("{topic} (Hz)"), format!("{rate:.1}")));
    }
    let message = match level {
        0 => "every input at its rate".to_owned(),
        _ => format!("slow or silent over the last {}: {}", seconds(recent.span_ns()), slow.join(", ")),
    };
    Check { concern: "input rates", level, message, values }
}

fn inference(recent: &mut Recent, th: &Thresholds, now: i64) -> Check {
    let n = recent.latency.count(now);
    let p50 = recent.latency.quantile(now, 0.5).unwrap_or(0.0);
    let p99 = recent.latency.quantile(now, 0.99).unwrap_or(0.0);
    let (level, message) = if n == 0 {
        (0, format!("no inference in the last {}", seconds(recent.span_ns())))
    } else if p99 > th.inference_error_ms {
        (2, format!("forward time p99 {p99:.1} ms (error above {} ms)", th.inference_error_ms))
    } else if p99 > th.inference_warn_ms {
        (1, format!("forward time p99 {p99:.1} ms (warn above {} ms)", th.inference_warn_ms))
    } else {
        (0, format!("forward time p99 {p99:.1} ms"))
    };
    let values = vec![
        ("inferences in window".into(), n.to_string()),
        ("latency p50 (ms)".into(), format!("{p50:.2}")),
        ("latency p99 (ms)".into(), format!("{p99:.2}")),
    ];
    Check { concern: "inference", level, message, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn th() -> Thresholds {
        Thresholds::from_config(&Config::default())
    }

    fn value<'a>(c: &'a Check, key: &str) -> &'a str {
        &c.values.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} in {c:?}")).1
    }

    #[test]
    fn levels_follow_the_thresholds() {
        let mut r = Recent::new(5000 * MS);
        let inputs = vec![("camera/main/image_raw".to_owned(), Feed::Camera), ("joint_states".to_owned(), Feed::JointStates)];
        // Cameras at 30 Hz, joint states at 20 Hz (below the 50 Hz warning).
        for k in 0..150 {
            r.arrival("camera/main/image_raw", k * 33 * MS);
            r.spread.push(k * 33 * MS, (k % 10) as f64 * MS as f64);
            r.latency.push(k * 33 * MS, if k >= 147 { 900.0 } else { 2.0 });
        }
        for k in 0..99 {
            r.arrival("joint_states", k * 50 * MS);
        }
        let now = 149 * 33 * MS;
        let c = checks(&mut r, &inputs, &th(), now);
        let (sync, rates, inf) = (&c[0], &c[1], &c[2]);
        assert_eq!((sync.concern, sync.level), ("camera sync", 0), "{sync:?}");
        assert_eq!(value(sync, "stamp spread max (ms)"), "9.00");
        assert_eq!(value(sync, "stamp spread p50 (ms)"), "4.00");
        assert_eq!((rates.level, value(rates, "camera/main/image_raw (Hz)")), (1, "30.3"));
        assert!(rates.message.contains("joint_states 20.0 Hz"), "{rates:?}");
        // Three forward passes of 150 over the error threshold: the 99th percentile is.
        assert_eq!(inf.level, 2, "{inf:?}");
        assert_eq!(value(inf, "latency p50 (ms)"), "2.00");

        // A spread beyond the warning.
        r.spread.push(now + MS, 20.0 * MS as f64);
        let c = checks(&mut r, &inputs, &th(), now + MS);
        assert_eq!(c[0].level, 1, "{:?}", c[0]);
        assert!(c[0].message.contains("20.00 ms"), "{:?}", c[0]);
        // Everything aged out: no set (a warning), silent inputs (an error), no inference.
        let c = checks(&mut r, &inputs, &th(), now + 6000 * MS);
        assert_eq!((c[0].level, c[1].level, c[2].level), (1, 2, 0), "{c:?}");
    }
}
