//! The integration of a flow-matching policy's velocity field from noise to a chunk, for
//! every runner: plain Euler steps as docs/POLICY_CONTRACT.md states them, and real-time
//! chunking's guided inpainting (Black, Galliker and Levine, 2025, "Real-Time Execution
//! of Action Chunking Flow Policies", Algorithm 1), or hard-mask inpainting for a policy
//! whose velocity gives no gradients.
//!
//! Values are batch-major `[B, T, D]` f32 vectors: `T` actions of width `D` (the padded
//! width where the policy pads).

use crate::core::contract::{FlowSpec, FlowTime, Guidance as Gradients, PolicyMeta};
use crate::core::control::rtc;
use crate::core::pipeline::Inpaint;
use crate::error::Result;

/// A flow-matching policy's learned velocity at one batch of observations.
pub trait VelocityField {
    /// `v(x, t)`.
    fn velocity(&mut self, x: &[f32], t: f32) -> Result<Vec<f32>>;

    /// `v(x, t)` and the vector-Jacobian product `cotangent^T dv/dx`.
    fn velocity_vjp(&mut self, x: &[f32], t: f32, cotangent: &[f32]) -> Result<(Vec<f32>, Vec<f32>)>;
}

/// Real-time chunking's inputs to one integration: the running chunk's actions for the
/// new chunk's ticks, and how strongly each is to be kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Inpainting {
    /// `[T, D]` normalized: the running chunk's action for each tick of the new chunk
    /// (0 where it has none).
    pub target: Vec<f32>,
    /// `[T]`: 1 for the frozen prefix (the actions executed while inferring), decaying
    /// over the rest of the overlap, 0 beyond (see `core::control::rtc::weights`).
    pub weights: Vec<f32>,
    /// The frozen prefix's length: the inference delay in ticks.
    pub delay: usize,
    /// beta: the largest guidance weight.
    pub max_guidance_weight: f32,
}

impl Inpainting {
    /// Real-time chunking's request in the integration's terms: the running chunk's
    /// actions normalized as the policy's (0 in padded columns and beyond the running
    /// chunk), and the paper's soft mask over `meta.chunk_length` steps.
    pub fn new(meta: &PolicyMeta, spec: FlowSpec, inpaint: &Inpaint, max_guidance_weight: f64) -> Inpainting {
        let (t_len, a) = (meta.chunk_length, meta.action_names.len());
        let width = spec.width(a);
        let n = &meta.normalization;
        let mut target = vec![0.0f32; t_len * width];
        for (step, action) in inpaint.prefix.iter().take(t_len).enumerate() {
            for (j, v) in action.iter().take(a).enumerate() {
                target[step * width + j] = ((v - n.action_mean[j]) / n.action_std[j]) as f32;
            }
        }
        let weights = rtc::weights(inpaint.delay, inpaint.prefix.len(), t_len).into_iter().map(|w| w as f32).collect();
        Inpainting { target, weights, delay: inpaint.delay.min(inpaint.prefix.len()), max_guidance_weight: max_guidance_weight as f32 }
    }
}

/// The progress `tau` of the paper (0 = noise, 1 = data) at flow time `t`, and the sign
/// that turns the policy's velocity into the paper's (pointing towards the data as
/// `tau` grows).
fn progress(time: FlowTime, t: f64) -> (f64, f32) {
    match time {
        FlowTime::NoiseAtOne => (1.0 - t, -1.0),
        FlowTime::NoiseAtZero => (t, 1.0),
    }
}

/// The guidance weight at progress `tau`: `min(beta, (1 - tau) / (tau r^2))` with
/// `r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)`, i.e. `(tau^2 + (1 - tau)^2) /
/// (tau (1 - tau))`, infinite at both ends and so clipped there.
pub fn guidance_weight(tau: f64, max: f64) -> f64 {
    let w = (tau * tau + (1.0 - tau) * (1.0 - tau)) / (tau * (1.0 - tau));
    if w.is_finite() { w.min(max) } else { max }
}

/// Integrates `field` from `noise` (`[B, T, D]`) with `spec`'s Euler steps; with
/// `inpainting`, every element of the batch is steered towards its target, and its
/// frozen prefix ends exactly on it.
pub fn integrate(field: &mut dyn VelocityField, noise: Vec<f32>, spec: FlowSpec, t_len: usize, inpainting: Option<&Inpainting>) -> Result<Vec<f32>> {
    let n = spec.num_steps as f64;
    let (t0, dt) = match spec.time {
        FlowTime::NoiseAtOne => (1.0, -1.0 / n),
        FlowTime::NoiseAtZero => (0.0, 1.0 / n),
    };
    let initial = noise.clone();
    let mut x = noise;
    let width = x.len() / t_len.max(1);
    for k in 0..spec.num_steps {
        let t = t0 + k as f64 * dt;
        let v = match inpainting {
            None => field.velocity(&x, t as f32)?,
            Some(p) if spec.guidance == Gradients::Autograd => guided_velocity(field, &x, t, spec.time, p, t_len, width)?,
            Some(p) => {
                // Hard-mask inpainting: the frozen prefix is put on the straight path
                // between its noise and its target before every step.
                let (tau, _) = progress(spec.time, t);
                for (i, xi) in x.iter_mut().enumerate() {
                    let (step, col) = ((i / width) % t_len, i % width);
                    if step < p.delay {
                        *xi = ((1.0 - tau) * f64::from(initial[i]) + tau * f64::from(p.target[step * width + col])) as f32;
                    }
                }
                field.velocity(&x, t as f32)?
            }
        };
        for (xi, vi) in x.iter_mut().zip(&v) {
            *xi = (f64::from(*xi) + dt * f64::from(*vi)) as f32;
        }
    }
    if let Some(p) = inpainting {
        // The frozen prefix is what runs while the chunk is computed: exactly the target.
        for (i, xi) in x.iter_mut().enumerate() {
            let (step, col) = ((i / width) % t_len, i % width);
            if step < p.delay {
                *xi = p.target[step * width + col];
            }
        }
    }
    Ok(x)
}

/// One guided velocity (Algorithm 1): the one-step estimate of the final chunk
/// `A = x + (1 - tau) v_p`, its error against the target weighted per step,
/// `g = e^T dA/dx = e + (1 - tau) e^T dv_p/dx`, and `v_p + w(tau) g`.
fn guided_velocity(field: &mut dyn VelocityField, x: &[f32], t: f64, time: FlowTime, p: &Inpainting, t_len: usize, width: usize) -> Result<Vec<f32>> {
    let (tau, sign) = progress(time, t);
    // The error needs v first; the cotangent of the vector-Jacobian product is the error
    // itself, so v is evaluated once for the error and once with its product.
    let v = field.velocity(x, t as f32)?;
    let error: Vec<f32> = x
        .iter()
        .zip(&v)
        .enumerate()
        .map(|(i, (&xi, &vi))| {
            let (step, col) = ((i / width) % t_len, i % width);
            let estimate = f64::from(xi) + (1.0 - tau) * f64::from(sign * vi);
            (f64::from(p.weights[step]) * (f64::from(p.target[step * width + col]) - estimate)) as f32
        })
        .collect();
    // e^T dv/dx of the policy's velocity; the paper's v_p is sign * v.
    let (_, vjp) = field.velocity_vjp(x, t as f32, &error)?;
    let w = guidance_weight(tau, f64::from(p.max_guidance_weight));
    Ok(v.iter()
        .zip(error.iter().zip(&vjp))
        .map(|(&vi, (&e, &j))| {
            let g = f64::from(e) + (1.0 - tau) * f64::from(sign) * f64::from(j);
            // Back to the policy's convention: v = sign * (v_p + w g).
            (f64::from(vi) + f64::from(sign) * w * g) as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `exact`, the exact flow to a fixed chunk `a` with noise at t = 1 (`x_t = t z
    /// + (1 - t) a`, so `v = (x - a) / t`, `dv/dx = I / t`); without, `v = x - a`
    /// (`dv/dx = I`), whose one-step estimate depends on `x`, so guidance has a gradient.
    struct ToTarget {
        a: Vec<f32>,
        exact: bool,
    }

    impl VelocityField for ToTarget {
        fn velocity(&mut self, x: &[f32], t: f32) -> Result<Vec<f32>> {
            let d = if self.exact { t } else { 1.0 };
            Ok(x.iter().zip(&self.a).map(|(x, a)| (x - a) / d).collect())
        }

        fn velocity_vjp(&mut self, x: &[f32], t: f32, c: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
            let d = if self.exact { t } else { 1.0 };
            Ok((self.velocity(x, t)?, c.iter().map(|c| c / d).collect()))
        }
    }

    fn spec(guidance: Gradients) -> FlowSpec {
        FlowSpec { num_steps: 10, time: FlowTime::NoiseAtOne, guidance, padded_action_dim: None }
    }

    #[test]
    fn euler_steps_follow_the_exact_flow_to_its_end() {
        let a = vec![0.5, -1.0, 2.0, 0.25];
        let noise = vec![1.0, 0.0, -1.0, 3.0];
        let x = integrate(&mut ToTarget { a: a.clone(), exact: true }, noise, spec(Gradients::None), 2, None).unwrap();
        for (x, a) in x.iter().zip(&a) {
            assert!((x - a).abs() < 1e-5, "{x} {a}");
        }
    }

    #[test]
    fn the_guidance_weight_is_the_papers_and_clipped() {
        assert_eq!(guidance_weight(0.0, 5.0), 5.0);
        assert_eq!(guidance_weight(1.0, 5.0), 5.0);
        // (0.25 + 0.25) / 0.25 = 2 at tau = 1/2.
        assert!((guidance_weight(0.5, 5.0) - 2.0).abs() < 1e-12);
        let tau: f64 = 0.3;
        let r2 = (1.0 - tau).powi(2) / (tau.powi(2) + (1.0 - tau).powi(2));
        assert!((guidance_weight(tau, 100.0) - (1.0 - tau) / (tau * r2)).abs() < 1e-12);
        assert_eq!(guidance_weight(0.01, 5.0), 5.0);
    }

    /// The guided step against a plain offline reference of Algorithm 1, written in the
    /// paper's convention (tau from 0 to 1, v_p towards the data), on a velocity field
    /// whose Jacobian is known.
    #[test]
    fn guided_integration_is_algorithm_1() {
        let (t_len, width) = (4, 2);
        let a: Vec<f32> = vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8];
        let target: Vec<f32> = vec![1.0, 1.0, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0];
        let weights = vec![1.0, 0.5, 0.0, 0.0];
        let p = Inpainting { target: target.clone(), weights: weights.clone(), delay: 1, max_guidance_weight: 5.0 };
        let noise: Vec<f32> = vec![0.3, -0.2, 1.1, 0.0, -0.5, 0.4, 0.9, -1.0];
        let got = integrate(&mut ToTarget { a: a.clone(), exact: false }, noise.clone(), spec(Gradients::Autograd), t_len, Some(&p)).unwrap();

        // Reference: A^0 = noise; for k in 0..n: tau = k/n; v_p = -(x - a) (the field's
        // velocity, turned towards the data); Ahat = x + (1 - tau) v_p; e = W (Y - Ahat);
        // dAhat/dx = I + (1 - tau) dv_p/dx = tau I; g = tau e; x += (v_p + w g)/n.
        let n = 10;
        let mut x: Vec<f64> = noise.iter().map(|&v| f64::from(v)).collect();
        for k in 0..n {
            let tau = k as f64 / n as f64;
            let w = guidance_weight(tau, 5.0);
            let next: Vec<f64> = (0..x.len())
                .map(|i| {
                    let vp = -(x[i] - f64::from(a[i]));
                    let ahat = x[i] + (1.0 - tau) * vp;
                    let e = f64::from(weights[i / width]) * (f64::from(target[i]) - ahat);
                    let g = tau * e;
                    x[i] + (vp + w * g) / n as f64
                })
                .collect();
            x = next;
        }
        for (g, r) in got.iter().zip(&x).skip(width) {
            assert!((f64::from(*g) - r).abs() < 1e-4, "{got:?} vs {x:?}");
        }
        // The frozen prefix (step 0) ends exactly on its target; guidance pulls the
        // weighted step 1 towards it and leaves steps 2 and 3 alone.
        assert_eq!(&got[..2], &target[..2]);
        let plain = integrate(&mut ToTarget { a: a.clone(), exact: false }, noise, spec(Gradients::None), t_len, None).unwrap();
        assert!((got[2] - target[2]).abs() < (plain[2] - target[2]).abs());
        for i in 4..8 {
            assert!((got[i] - plain[i]).abs() < 1e-5);
        }
    }

    #[test]
    fn hard_masking_puts_the_prefix_on_its_target() {
        let a = vec![0.0; 6];
        let target = vec![1.0, 2.0, 0.0, 0.0, 0.0, 0.0];
        let p = Inpainting { target: target.clone(), weights: vec![1.0, 0.0, 0.0], delay: 1, max_guidance_weight: 5.0 };
        let noise = vec![0.5; 6];
        let x = integrate(&mut ToTarget { a, exact: true }, noise, spec(Gradients::None), 3, Some(&p)).unwrap();
        // The frozen prefix ends on its target; the rest is the plain flow's.
        assert_eq!(&x[..2], &[1.0, 2.0]);
        assert!(x[2..].iter().all(|v| v.abs() < 1e-5), "{x:?}");
    }
}
