//! Occlusion attribution: which image patches the chunk depends on, for any policy.

use crate::core::pipeline::Observation;
use crate::error::{Error, Result};
use crate::policy::{PolicyOutput, PolicyRunner, Priority};

/// The grids by occlusion: for every camera and patch, the Euclidean distance between
/// the action chunk with that patch replaced by the image's mean colour and the chunk
/// of the untouched input. The untouched input runs in the same batches (1 + C x rows x
/// cols inputs in all), so the comparison is within one deterministic computation.
pub fn grids(policy: &dyn PolicyRunner, obs: &Observation, batch: usize) -> Result<Vec<Vec<f32>>> {
    let m = policy.meta();
    let (c, h, w) = (m.camera_names.len(), m.image_height, m.image_width);
    let [rows, cols] = m.patch_grid;
    if h % rows != 0 || w % cols != 0 {
        return Err(Error::Inference(format!(
            "occlusion needs the {w}x{h} input to divide into the {cols}x{rows} grid"
        )));
    }
    let (ph, pw) = (h / rows, w / cols);
    let per_cam = h * w * 3;
    let means: Vec<[u8; 3]> = (0..c)
        .map(|k| {
            let img = &obs.images[k * per_cam..(k + 1) * per_cam];
            let mut s = [0u64; 3];
            for px in img.chunks_exact(3) {
                for j in 0..3 {
                    s[j] += px[j] as u64;
                }
            }
            let n = (h * w) as u64;
            s.map(|v| ((v + n / 2) / n) as u8)
        })
        .collect();
    // Input 0 is the untouched observation, input 1 + (k * rows + r) * cols + q has patch
    // (r, q) of camera k occluded.
    let total = 1 + c * rows * cols;
    let make = |i: usize, buf: &mut Vec<u8>| {
        buf.extend_from_slice(&obs.images);
        if i == 0 {
            return;
        }
        let j = i - 1;
        let (k, r, q) = (j / (rows * cols), (j / cols) % rows, j % cols);
        let start = buf.len() - obs.images.len() + k * per_cam;
        for y in r * ph..(r + 1) * ph {
            for x in q * pw..(q + 1) * pw {
                let o = start + (y * w + x) * 3;
                buf[o..o + 3].copy_from_slice(&means[k]);
            }
        }
    };
    // A batch larger than all the inputs is one pass of all of them (occlusion_batch
    // has no upper bound; a billion must not reserve a billion copies).
    let batch = batch.clamp(1, total);
    let mut outputs: Vec<PolicyOutput> = Vec::with_capacity(total);
    let mut buf = Vec::with_capacity(batch * obs.images.len());
    let mut i = 0;
    while i < total {
        let n = batch.min(total - i);
        buf.clear();
        for b in 0..n {
            make(i + b, &mut buf);
        }
        outputs.extend(policy.infer_batch(&buf, n, &obs.state, &obs.tokens, Priority::Background)?);
        i += n;
    }
    let base = &outputs[0].actions;
    let dist = |o: &PolicyOutput| -> f32 {
        o.actions
            .iter()
            .flatten()
            .zip(base.iter().flatten())
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt() as f32
    };
    Ok((0..c)
        .map(|k| (0..rows * cols).map(|p| dist(&outputs[1 + k * rows * cols + p])).collect())
        .collect())
}

