//! The noise a flow-matching policy starts from, drawn from a seed (the camera set's
//! stamp) so that a replay gives the same chunk bit for bit, on any machine: SplitMix64
//! for the uniform draws, Box-Muller for the normal ones (docs/POLICY_CONTRACT.md states
//! it exactly; python/vla_demo/flow.py implements the same).

/// `n` standard normal values from `seed`, as f32.
pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    const TWO_53: f64 = 9_007_199_254_740_992.0;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1], so that its logarithm is finite; u2 in [0, 1).
        let u1 = ((next() >> 11) as f64 + 1.0) / TWO_53;
        let u2 = (next() >> 11) as f64 / TWO_53;
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_noise_and_it_is_standard_normal() {
        assert_eq!(gaussian(42, 7), gaussian(42, 7));
        assert_ne!(gaussian(42, 7), gaussian(43, 7));
        assert_eq!(gaussian(42, 7)[..5], gaussian(42, 5)[..]);
        let v = gaussian(1_700_000_000_123_456_789, 100_000);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "mean {mean}, variance {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn the_noise_is_python_s() {
        // python/vla_demo/flow.py's gaussian(42, 4), as numpy prints the float32 values.
        assert_eq!(gaussian(42, 4), [0.414_719_76, 0.652_681_23, -0.891_886_23, 1.326_833_6]);
    }
}
