//! Occlusion attribution, for any policy: which image patches and which instruction
//! tokens the chunk depends on, measured by taking each away in turn.
//!
//! Every occluded copy runs in batches together with the untouched input (input 0), so
//! the comparison is within one deterministic computation; a flow-matching policy runs
//! them all from the same seeded noise, so the change is the input's and not the noise's.

use crate::core::pipeline::Observation;
use crate::error::Result;
use crate::policy::{Batch, BatchTokens, PolicyOutput, PolicyRunner, Priority};

/// Rows `r * h / rows .. (r + 1) * h / rows`: every patch at least one pixel, edge and
/// inner patches as even as the size allows when the grid does not divide it.
fn span(i: usize, len: usize, parts: usize) -> (usize, usize) {
    (i * len / parts, (i + 1) * len / parts)
}

/// The Euclidean distance between two chunks.
fn distance(a: &PolicyOutput, b: &PolicyOutput) -> f32 {
    a.actions.iter().flatten().zip(b.actions.iter().flatten()).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt() as f32
}

/// Runs `total` inputs, input `i` written by `make(i, buf)`, in batches of `batch`, at
/// background priority, all with `tokens(i)`.
fn run_all<'t>(
    policy: &dyn PolicyRunner,
    obs: &Observation,
    total: usize,
    batch: usize,
    make: impl Fn(usize, &mut Vec<u8>),
    tokens: impl Fn(std::ops::Range<usize>) -> BatchTokens<'t>,
) -> Result<Vec<PolicyOutput>> {
    // A batch larger than all the inputs is one pass of all of them (occlusion_batch
    // has no upper bound; a billion must not reserve a billion copies).
    let batch = batch.clamp(1, total.max(1));
    let mut outputs = Vec::with_capacity(total);
    let mut buf = Vec::with_capacity(batch * obs.images.len());
    let mut i = 0;
    while i < total {
        let n = batch.min(total - i);
        buf.clear();
        for b in 0..n {
            make(i + b, &mut buf);
        }
        let inputs = Batch { images: &buf, size: n, state: &obs.state, tokens: tokens(i..i + n), seed: obs.stamp as u64, inpainting: None };
        outputs.extend(policy.infer_batch(&inputs, Priority::Background)?);
        i += n;
    }
    Ok(outputs)
}

/// The grids by occlusion: for every camera and patch (the `patch_grid` over each
/// camera's input, sizes differing by one pixel where it does not divide), the distance between
/// the chunk with that patch replaced by the image's mean colour and the chunk of the
/// untouched input (1 + the cameras' patches inputs in all).
pub fn grids(policy: &dyn PolicyRunner, obs: &Observation, batch: usize) -> Result<Vec<Vec<f32>>> {
    let m = policy.meta();
    let [rows, cols] = m.patch_grid;
    let mut offsets = Vec::with_capacity(m.cameras.len());
    let mut offset = 0;
    for c in &m.cameras {
        offsets.push(offset);
        offset += c.input_len();
    }
    let means: Vec<[u8; 3]> = m
        .cameras
        .iter()
        .zip(&offsets)
        .map(|(c, &o)| {
            let mut s = [0u64; 3];
            for px in obs.images[o..o + c.input_len()].chunks_exact(3) {
                for j in 0..3 {
                    s[j] += u64::from(px[j]);
                }
            }
            let n = (c.width * c.height) as u64;
            s.map(|v| ((v + n / 2) / n) as u8)
        })
        .collect();
    // Input 0 is the untouched observation, input 1 + (k * rows + r) * cols + q has patch
    // (r, q) of camera k occluded.
    let per_camera = rows * cols;
    let make = |i: usize, buf: &mut Vec<u8>| {
        let start = buf.len();
        buf.extend_from_slice(&obs.images);
        if i == 0 {
            return;
        }
        let j = i - 1;
        let (k, r, q) = (j / per_camera, (j / cols) % rows, j % cols);
        let (c, base) = (&m.cameras[k], start + offsets[k]);
        let ((y0, y1), (x0, x1)) = (span(r, c.height, rows), span(q, c.width, cols));
        for y in y0..y1 {
            for x in x0..x1 {
                let o = base + (y * c.width + x) * 3;
                buf[o..o + 3].copy_from_slice(&means[k]);
            }
        }
    };
    let total = 1 + m.cameras.len() * per_camera;
    let outputs = run_all(policy, obs, total, batch, make, |_| BatchTokens::Shared(&obs.tokens))?;
    Ok((0..m.cameras.len()).map(|k| (0..per_camera).map(|p| distance(&outputs[1 + k * per_camera + p], &outputs[0])).collect()).collect())
}

/// Token weights by occlusion, for a policy that returns none: per real token, the
/// distance between the chunk with that token masked out (its id the padding id) and
/// the chunk of the whole instruction, normalized to sum to 1 (all 0 when no token
/// changes the chunk).
pub fn token_weights(policy: &dyn PolicyRunner, obs: &Observation, batch: usize) -> Result<Vec<f32>> {
    let Some(tokenizer) = policy.tokenizer() else { return Ok(Vec::new()) };
    let n = obs.tokens.len();
    let variants: Vec<_> = std::iter::once(obs.tokens.as_ref().clone()).chain((0..n).map(|i| obs.tokens.without(i, tokenizer.pad_id()))).collect();
    let outputs = run_all(policy, obs, 1 + n, batch, |_, buf| buf.extend_from_slice(&obs.images), |r| BatchTokens::Each(&variants[r]))?;
    let d: Vec<f32> = outputs[1..].iter().map(|o| distance(o, &outputs[0])).collect();
    let sum: f32 = d.iter().sum();
    Ok(if sum > 0.0 { d.iter().map(|v| v / sum).collect() } else { d })
}

#[cfg(test)]
mod tests {
    use super::span;

    #[test]
    fn spans_cover_every_pixel_once_when_the_grid_does_not_divide() {
        for (len, parts) in [(96, 12), (100, 12), (7, 7), (13, 4)] {
            let spans: Vec<_> = (0..parts).map(|i| span(i, len, parts)).collect();
            assert_eq!(spans[0].0, 0);
            assert_eq!(spans[parts - 1].1, len);
            assert!(spans.windows(2).all(|w| w[0].1 == w[1].0));
            assert!(spans.iter().all(|(a, b)| b > a), "{len} {parts}: {spans:?}");
        }
    }
}
