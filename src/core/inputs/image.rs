//! Camera image decoding: a sensor_msgs/Image's fields in, the policy's RGB input out.
//!
//! Decoding and resizing happen in one pass so that a 640x480 frame is read once and
//! only the small policy-size image is kept. Three ways to the policy's size
//! ([`ResizeMode`]): the area mean, bilinear interpolation with half-pixel centres, and
//! letterboxing (bilinear keeping the aspect ratio, padded with black on the left and
//! top, as LeRobot's `resize_with_pad`). The bilinear arithmetic is that of PyTorch's
//! `interpolate(mode="bilinear", align_corners=False)`, done in f64 and rounded half up,
//! so that a plain Python reference (tests/explain) gives the same bytes.

pub use crate::core::contract::ResizeMode;

/// The fields of a sensor_msgs/Image that matter here, borrowed from the message.
#[derive(Debug, Clone, Copy)]
pub struct RawImage<'a> {
    pub width: u32,
    pub height: u32,
    pub encoding: &'a str,
    pub step: u32,
    pub data: &'a [u8],
}

/// Pixel layouts the node accepts (8 bits per channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Rgb8,
    Bgr8,
    Rgba8,
    Bgra8,
    Mono8,
}

impl Layout {
    fn parse(encoding: &str) -> Option<Layout> {
        Some(match encoding {
            "rgb8" => Layout::Rgb8,
            "bgr8" => Layout::Bgr8,
            "rgba8" => Layout::Rgba8,
            "bgra8" => Layout::Bgra8,
            "mono8" | "8UC1" => Layout::Mono8,
            _ => return None,
        })
    }

    fn channels(self) -> usize {
        match self {
            Layout::Rgb8 | Layout::Bgr8 => 3,
            Layout::Rgba8 | Layout::Bgra8 => 4,
            Layout::Mono8 => 1,
        }
    }

    /// Byte offsets of R, G and B within one pixel.
    fn rgb_offsets(self) -> [usize; 3] {
        match self {
            Layout::Rgb8 | Layout::Rgba8 => [0, 1, 2],
            Layout::Bgr8 | Layout::Bgra8 => [2, 1, 0],
            Layout::Mono8 => [0, 0, 0],
        }
    }
}

/// Why an image was rejected. The `Display` text is the reason counted in diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("unsupported encoding `{0}` (rgb8, bgr8, rgba8, bgra8, mono8 are)")]
    Encoding(String),
    #[error("size {width}x{height} differs from the {} {expected_width}x{expected_height}", if *.by_policy { "policy's expected" } else { "configured" })]
    Size {
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
        /// The policy named the size (contract version 2), not `image_width` x `image_height`.
        by_policy: bool,
    },
    #[error("image of {width}x{height} pixels has nothing to resize")]
    Empty { width: u32, height: u32 },
    #[error("step {step} is below width {width} x {channels} channels")]
    Step { step: u32, width: u32, channels: usize },
    #[error("data holds {len} bytes, step x height = {expected}")]
    DataLength { len: usize, expected: usize },
}

impl ImageError {
    /// The category, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::Encoding(_) => "unsupported encoding",
            ImageError::Size { by_policy: false, .. } => "image size differs from image_width x image_height",
            ImageError::Size { by_policy: true, .. } => "image size differs from the policy's expected size",
            ImageError::Empty { .. } => "empty image",
            ImageError::Step { .. } => "step below width x channels",
            ImageError::DataLength { .. } => "data length differs from step x height",
        }
    }
}

/// The size an image must have before it is resized, and who said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Any size.
    Any,
    /// `image_width` x `image_height` of the configuration.
    Configured(u32, u32),
    /// The policy's `expected_width` x `expected_height`.
    Policy(u32, u32),
}

/// [`decode`] by area mean, from an image of the configured size.
pub fn decode_resize(img: &RawImage<'_>, expected: (u32, u32), out_w: usize, out_h: usize, out: &mut Vec<u8>) -> Result<(), ImageError> {
    decode(img, Expected::Configured(expected.0, expected.1), out_w, out_h, ResizeMode::Area, out)
}

/// Checks `img` against the expected size and layout rules, then writes it as RGB into
/// `out` (`out_h x out_w x 3`, row-major), resized by `mode`.
///
/// By area, every output pixel averages the source pixels of its span. For integer
/// factors (640x480 to 128x96) that is the mean of a factor x factor block rounded half
/// up: `(sum + n/2) / n`, the same arithmetic the training pipeline uses, so the policy
/// sees exactly what it was trained on.
pub fn decode(
    img: &RawImage<'_>,
    expected: Expected,
    out_w: usize,
    out_h: usize,
    mode: ResizeMode,
    out: &mut Vec<u8>,
) -> Result<(), ImageError> {
    let layout = Layout::parse(img.encoding).ok_or_else(|| ImageError::Encoding(img.encoding.to_owned()))?;
    let (want, by_policy) = match expected {
        Expected::Any => (None, false),
        Expected::Configured(w, h) => (Some((w, h)), false),
        Expected::Policy(w, h) => (Some((w, h)), true),
    };
    if let Some((ew, eh)) = want.filter(|&e| e != (img.width, img.height)) {
        return Err(ImageError::Size { width: img.width, height: img.height, expected_width: ew, expected_height: eh, by_policy });
    }
    if img.width == 0 || img.height == 0 {
        return Err(ImageError::Empty { width: img.width, height: img.height });
    }
    let ch = layout.channels();
    let (w, h, step) = (img.width as usize, img.height as usize, img.step as usize);
    if step < w * ch {
        return Err(ImageError::Step { step: img.step, width: img.width, channels: ch });
    }
    if img.data.len() != step * h {
        return Err(ImageError::DataLength { len: img.data.len(), expected: step * h });
    }

    out.clear();
    out.resize(out_w * out_h * 3, 0);
    let geometry = Geometry { w, h, ch, step, offs: layout.rgb_offsets() };
    match mode {
        ResizeMode::Area => {}
        ResizeMode::Bilinear => {
            bilinear_into(img.data, &geometry, (out_w, out_h), (0, 0), out_w, out);
            return Ok(());
        }
        ResizeMode::Letterbox => {
            let (rw, rh) = letterbox_size((w, h), (out_w, out_h));
            bilinear_into(img.data, &geometry, (rw, rh), (out_w - rw, out_h - rh), out_w, out);
            return Ok(());
        }
    }
    // A span of at most 256 rows sums to at most 256 x 255 = 65280 per byte: 16-bit sums
    // hold it and halve the work of the vertical pass.
    if h.div_ceil(out_h) < 257 {
        resize_into::<u16>(img.data, &geometry, out_w, out_h, out);
    } else {
        resize_into::<u32>(img.data, &geometry, out_w, out_h, out);
    }
    Ok(())
}

/// The size an image of `src` size is resized to when letterboxed into `dst`, as
/// LeRobot's `resize_with_pad`: scaled by the larger of the two ratios, each side
/// truncated (and at least one pixel, where the aspect ratio is extreme).
pub fn letterbox_size(src: (usize, usize), dst: (usize, usize)) -> (usize, usize) {
    let ratio = (src.0 as f64 / dst.0 as f64).max(src.1 as f64 / dst.1 as f64);
    let side = |s: usize, d: usize| ((s as f64 / ratio) as usize).clamp(1, d);
    (side(src.0, dst.0), side(src.1, dst.1))
}

/// One axis of a bilinear resize: per output index, the two source indices and the
/// weight of the second, as PyTorch's `area_pixel_compute_source_index` with
/// `align_corners=False`: `src = (dst + 0.5) * in / out - 0.5`, at least 0.
fn bilinear_axis(src_len: usize, dst_len: usize) -> Vec<(usize, usize, f64)> {
    let scale = src_len as f64 / dst_len as f64;
    (0..dst_len)
        .map(|d| {
            let s = (scale * (d as f64 + 0.5) - 0.5).max(0.0);
            let i0 = (s as usize).min(src_len - 1);
            let i1 = if i0 < src_len - 1 { i0 + 1 } else { i0 };
            (i0, i1, s - i0 as f64)
        })
        .collect()
}

/// Bilinear resize of the source into a `size` region of `out` (rows `out_w` pixels
/// wide) whose top-left corner is at `offset`; the rest of `out` stays as it is (black).
/// Each channel: `h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11)` in f64,
/// rounded half up, in PyTorch's order of operations.
fn bilinear_into(data: &[u8], g: &Geometry, size: (usize, usize), offset: (usize, usize), out_w: usize, out: &mut [u8]) {
    let cols = bilinear_axis(g.w, size.0);
    let rows = bilinear_axis(g.h, size.1);
    let px = |y: usize, x: usize, c: usize| f64::from(data[y * g.step + x * g.ch + g.offs[c]]);
    for (oy, &(y0, y1, hl)) in rows.iter().enumerate() {
        let h0 = 1.0 - hl;
        let row = (oy + offset.1) * out_w;
        for (ox, &(x0, x1, wl)) in cols.iter().enumerate() {
            let w0 = 1.0 - wl;
            let o = (row + ox + offset.0) * 3;
            for c in 0..3 {
                let v = h0 * (w0 * px(y0, x0, c) + wl * px(y0, x1, c)) + hl * (w0 * px(y1, x0, c) + wl * px(y1, x1, c));
                out[o + c] = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Where a checked source image's pixels are: size, channels per pixel, row step, and
/// the byte offsets of R, G and B within a pixel.
struct Geometry {
    w: usize,
    h: usize,
    ch: usize,
    step: usize,
    offs: [usize; 3],
}

/// The area averaging of [`decode_resize`], with column sums of type `S`, which must hold
/// the sum of one output row's span of source rows.
///
/// Two passes per output row: the source rows of its span summed byte by byte (a plain
/// loop over the row that the compiler vectorizes), then each output pixel's columns
/// summed from that, picking the channels. Every source byte is read once.
fn resize_into<S>(data: &[u8], g: &Geometry, out_w: usize, out_h: usize, out: &mut [u8])
where
    S: Copy + Default + From<u8> + Into<u32> + std::ops::AddAssign,
{
    // Source span of each output column and row; integer bounds keep the integer-factor
    // case exact and cover every source pixel exactly once in the general case.
    let span = |o: usize, src: usize, dst: usize| (o * src / dst, ((o + 1) * src / dst).max(o * src / dst + 1));
    let cols: Vec<(usize, usize)> = (0..out_w).map(|x| span(x, g.w, out_w)).collect();
    let row_len = g.w * g.ch;
    let mut column_sums = vec![S::default(); row_len];
    for (oy, dst) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let (y0, y1) = span(oy, g.h, out_h);
        column_sums.fill(S::default());
        for y in y0..y1 {
            let row = &data[y * g.step..y * g.step + row_len];
            for (s, &b) in column_sums.iter_mut().zip(row) {
                *s += S::from(b);
            }
        }
        for (px_out, &(x0, x1)) in dst.chunks_exact_mut(3).zip(&cols) {
            let n = ((x1 - x0) * (y1 - y0)) as u32;
            let mut acc = [0u32; 3];
            for px in column_sums[x0 * g.ch..x1 * g.ch].chunks_exact(g.ch) {
                for c in 0..3 {
                    acc[c] += px[g.offs[c]].into();
                }
            }
            for c in 0..3 {
                px_out[c] = ((acc[c] + n / 2) / n) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(w: u32, h: u32, enc: &'a str, step: u32, data: &'a [u8]) -> RawImage<'a> {
        RawImage { width: w, height: h, encoding: enc, step, data }
    }

    #[test]
    fn integer_factor_is_block_mean_rounded_half_up() {
        // 4x2 rgb8 -> 2x1: each output pixel averages a 2x2 block.
        #[rustfmt::skip]
        let data = [
            0, 10, 255,   1, 10, 255,   100, 0, 0,   100, 0, 0,
            0, 10, 255,   2, 11, 254,   101, 0, 0,   100, 0, 1,
        ];
        let mut out = Vec::new();
        decode_resize(&raw(4, 2, "rgb8", 12, &data), (4, 2), 2, 1, &mut out).unwrap();
        // (0+1+0+2+2)/4 = 1 (5/4 rounds to 1); (10+10+10+11+2)/4 = 10 (43/4); (255*3+254+2)/4 = 255
        // (100+100+101+100+2)/4 = 100; 0; (0+0+0+1+2)/4 = 0
        assert_eq!(out, vec![1, 10, 255, 100, 0, 0]);
    }

    #[test]
    fn bgr_mono_and_padding_are_handled() {
        let bgr = [1u8, 2, 3, 9, 9]; // one pixel plus 2 bytes of row padding
        let mut out = Vec::new();
        decode_resize(&raw(1, 1, "bgr8", 5, &bgr), (1, 1), 1, 1, &mut out).unwrap();
        assert_eq!(out, vec![3, 2, 1]);
        decode_resize(&raw(1, 1, "mono8", 1, &[77]), (1, 1), 1, 1, &mut out).unwrap();
        assert_eq!(out, vec![77, 77, 77]);
        decode_resize(&raw(1, 1, "bgra8", 4, &[1, 2, 3, 4]), (1, 1), 1, 1, &mut out).unwrap();
        assert_eq!(out, vec![3, 2, 1]);
    }

    #[test]
    fn non_integer_factor_covers_every_pixel() {
        // 3x1 mono -> 2x1: columns [0,1) and [1,3).
        let mut out = Vec::new();
        decode_resize(&raw(3, 1, "mono8", 3, &[10, 20, 40]), (3, 1), 2, 1, &mut out).unwrap();
        assert_eq!(out, vec![10, 10, 10, 30, 30, 30]);
        // Upsampling repeats pixels.
        decode_resize(&raw(1, 1, "rgb8", 3, &[5, 6, 7]), (1, 1), 2, 2, &mut out).unwrap();
        assert_eq!(out, [5, 6, 7].repeat(4));
    }

    #[test]
    fn tall_spans_are_summed_without_overflow() {
        // 520 rows to 2: spans of 260 rows of 255, beyond what 16-bit sums hold.
        let data = vec![255u8; 520];
        let mut out = Vec::new();
        decode_resize(&raw(1, 520, "mono8", 1, &data), (1, 520), 1, 2, &mut out).unwrap();
        assert_eq!(out, vec![255; 6]);
    }

    #[test]
    fn bad_images_are_rejected_with_reasons() {
        let mut out = Vec::new();
        let e = decode_resize(&raw(2, 2, "yuv422", 4, &[0; 8]), (2, 2), 1, 1, &mut out).unwrap_err();
        assert!(e.to_string().contains("yuv422"));
        let e = decode_resize(&raw(2, 2, "rgb8", 6, &[0; 12]), (4, 4), 1, 1, &mut out).unwrap_err();
        assert!(matches!(e, ImageError::Size { .. }), "{e}");
        let e = decode_resize(&raw(2, 2, "rgb8", 5, &[0; 10]), (2, 2), 1, 1, &mut out).unwrap_err();
        assert!(matches!(e, ImageError::Step { .. }), "{e}");
        let e = decode_resize(&raw(2, 2, "rgb8", 6, &[0; 11]), (2, 2), 1, 1, &mut out).unwrap_err();
        assert_eq!(e, ImageError::DataLength { len: 11, expected: 12 });
        let e = decode_resize(&raw(2, 2, "rgb8", 6, &[]), (2, 2), 1, 1, &mut out).unwrap_err();
        assert!(matches!(e, ImageError::DataLength { len: 0, .. }));
        // Found by fuzzing (fuzz/fuzz_targets/image.rs): an image of no pixels expected
        // at its own size indexed past the end of an empty row.
        for (w, h) in [(0, 5), (3, 0), (0, 0)] {
            let e = decode_resize(&raw(w, h, "rgb8", w * 3, &[]), (w, h), 2, 2, &mut out).unwrap_err();
            assert_eq!(e, ImageError::Empty { width: w, height: h });
        }
    }
}
