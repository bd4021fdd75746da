//! Camera image decoding: a sensor_msgs/Image's fields in, the policy's RGB input out.
//!
//! Decoding and resizing happen in one pass so that a 640x480 frame is read once and
//! only the small policy-size image is kept.

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
    #[error("size {width}x{height} differs from the configured {expected_width}x{expected_height}")]
    Size {
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
    },
    #[error("step {step} is below width {width} x {channels} channels")]
    Step { step: u32, width: u32, channels: usize },
    #[error("data holds {len} bytes, step x height = {expected}")]
    DataLength { len: usize, expected: usize },
    #[error("image of {width}x{height} has no pixels")]
    Empty { width: u32, height: u32 },
}

impl ImageError {
    /// The category, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::Encoding(_) => "unsupported encoding",
            ImageError::Size { .. } => "image size differs from image_width x image_height",
            ImageError::Step { .. } => "step below width x channels",
            ImageError::DataLength { .. } => "data length differs from step x height",
            ImageError::Empty { .. } => "image has no pixels",
        }
    }
}

/// Checks `img` against the expected size and layout rules, then writes it as RGB into
/// `out` (`out_h x out_w x 3`, row-major), averaging over the source area of each output
/// pixel. For integer factors (640x480 to 128x96) every output pixel is the mean of a
/// factor x factor block rounded half up: `(sum + n/2) / n`, the same arithmetic the
/// training pipeline uses, so the policy sees exactly what it was trained on.
pub fn decode_resize(
    img: &RawImage<'_>,
    expected: (u32, u32),
    out_w: usize,
    out_h: usize,
    out: &mut Vec<u8>,
) -> Result<(), ImageError> {
    let layout = Layout::parse(img.encoding).ok_or_else(|| ImageError::Encoding(img.encoding.to_owned()))?;
    if (img.width, img.height) != expected {
        return Err(ImageError::Size {
            width: img.width,
            height: img.height,
            expected_width: expected.0,
            expected_height: expected.1,
        });
    }
    // Never with a configured size (image_width, image_height >= 1), but this is a
    // public function: a 0-pixel-wide image has no source span to average.
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
    // A span of at most 256 rows sums to at most 256 x 255 = 65280 per byte: 16-bit sums
    // hold it and halve the work of the vertical pass.
    if h.div_ceil(out_h) < 257 {
        resize_into::<u16>(img.data, &geometry, out_w, out_h, out);
    } else {
        resize_into::<u32>(img.data, &geometry, out_w, out_h, out);
    }
    Ok(())
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
