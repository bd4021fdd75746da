//! Pictures of explanations for RViz and rqt: activation grids blended over camera images,
//! and the instruction's tokens coloured by weight. Plain values in, images out.

use std::ops::Deref;

use image::{ImageBuffer, Rgb, RgbImage};

use super::font::{draw_text, fill, text_width, GLYPH_HEIGHT};

/// A warm colormap (matplotlib's "inferno", piecewise linear through five of its
/// colours): black-purple for 0, through red and orange, to pale yellow for 1.
pub fn colormap(v: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [87.0, 16.0, 110.0],
        [188.0, 55.0, 84.0],
        [249.0, 142.0, 9.0],
        [252.0, 255.0, 164.0],
    ];
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    let x = v * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [0, 1, 2].map(|c| (a[c] + (b[c] - a[c]) * f).round() as u8)
}

/// Bilinear upsampling of a `rows x cols` grid to `w x h`, sampling at pixel centres
/// (as torch's `interpolate(..., align_corners=False)` and OpenCV's `resize` do), so a
/// cell's value is exact at the centre of the area it covers. Separable: each grid row
/// is interpolated across the width once, and output rows blend two of those.
struct Bilinear {
    w: usize,
    /// For each output row: the two grid rows it lies between and the weight of the second.
    ys: Vec<(usize, usize, f32)>,
    /// The grid's rows, each interpolated to `w` values.
    wide: Vec<f32>,
}

impl Bilinear {
    fn new(grid: &[f32], rows: usize, cols: usize, w: usize, h: usize) -> Self {
        // Occlusion makes rows x cols values per camera, and policy maps are cut into
        // chunks of exactly that (explain::explain); rows and cols are the contract's grid.
        assert_eq!(grid.len(), rows * cols);
        let axis = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
            (0..n_out)
                .map(|o| {
                    let s = ((o as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).clamp(0.0, (n_in - 1) as f32);
                    let i0 = s.floor() as usize;
                    (i0, (i0 + 1).min(n_in - 1), s - i0 as f32)
                })
                .collect()
        };
        let xs = axis(w, cols);
        let wide = (0..rows)
            .flat_map(|r| {
                let row = &grid[r * cols..(r + 1) * cols];
                xs.iter().map(move |&(x0, x1, fx)| row[x0] * (1.0 - fx) + row[x1] * fx)
            })
            .collect();
        Bilinear { w, ys: axis(h, rows), wide }
    }

    /// Output row `y`, written to `out` (`w` values).
    fn row(&self, y: usize, out: &mut [f32]) {
        let (y0, y1, fy) = self.ys[y];
        let w = self.w;
        let (top, bottom) = (&self.wide[y0 * w..(y0 + 1) * w], &self.wide[y1 * w..(y1 + 1) * w]);
        for ((o, t), b) in out.iter_mut().zip(top).zip(bottom) {
            *o = t * (1.0 - fy) + b * fy;
        }
    }
}

/// Scales non-negative values so the largest is 1 (all zeros stay zeros).
pub fn normalize_max(values: &[f32]) -> Vec<f32> {
    let max = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f32, f32::max);
    values.iter().map(|v| if max > 0.0 && v.is_finite() { (v / max).max(0.0) } else { 0.0 }).collect()
}

/// The grid (normalized to its maximum, colour-mapped and upsampled to the image size)
/// blended over `camera` (RGB, borrowed or owned) with weight `alpha` for the map, in
/// steps of 1/256: each byte is `(keep x camera + a x colour + 128) / 256` with
/// `a = round(256 alpha)` and `keep = 256 - a`. The colour map is looked up in 1024
/// steps, finer than the 8-bit output can show.
///
/// Row by row, so the working set stays in cache: the row's map values, their table
/// indices, their colours (the one lookup per pixel), then the blend over the row's
/// bytes. All but the lookup are plain loops the compiler vectorizes; the render of a
/// 640x480 overlay takes a fraction of a millisecond (`make bench`).
pub fn overlay<C: Deref<Target = [u8]>>(
    camera: &ImageBuffer<Rgb<u8>, C>,
    grid: &[f32],
    rows: usize,
    cols: usize,
    alpha: f32,
) -> RgbImage {
    const STEPS: usize = 1024;
    const _: () = assert!(STEPS.is_power_of_two(), "indices are masked with STEPS - 1");
    let (w, h) = (camera.width() as usize, camera.height() as usize);
    let map = Bilinear::new(&normalize_max(grid), rows, cols, w, h);
    let a = (alpha.clamp(0.0, 1.0) * 256.0).round() as u16;
    let keep = 256 - a;
    // a x colour + 128 (for rounding) per step. A fixed-size table indexed with a mask
    // needs no bounds check in the loop.
    let mut lut = [[0u16; 3]; STEPS];
    for (i, e) in lut.iter_mut().enumerate() {
        *e = colormap(i as f32 / (STEPS - 1) as f32).map(|c| a * c as u16 + 128);
    }
    let mut out = vec![0u8; w * h * 3];
    let (mut values, mut steps, mut colours) = (vec![0.0f32; w], vec![0u16; w], vec![0u16; w * 3]);
    let rows_out = out.chunks_exact_mut(w * 3).zip(camera.as_raw().chunks_exact(w * 3));
    for (y, (dst, src)) in rows_out.enumerate() {
        map.row(y, &mut values);
        for (s, v) in steps.iter_mut().zip(&values) {
            // Round to the nearest step without a float-to-integer conversion (which does
            // not vectorize): adding 2^23 leaves the integer in the low mantissa bits.
            // max/min rather than clamp: they also turn a NaN into 0.
            #[allow(clippy::manual_clamp)]
            let x = v.max(0.0).min(1.0) * (STEPS - 1) as f32 + 8_388_608.0;
            *s = (x.to_bits() & 0x7ff) as u16;
        }
        for (c, &s) in colours.chunks_exact_mut(3).zip(&steps) {
            c.copy_from_slice(&lut[s as usize & (STEPS - 1)]);
        }
        for ((d, &s), &c) in dst.iter_mut().zip(src).zip(&colours) {
            *d = ((keep * s as u16 + c) >> 8) as u8;
        }
    }
    // `out` was made w x h x 3 long above (the camera image's own size).
    RgbImage::from_raw(w as u32, h as u32, out).expect("w x h x 3 values")
}

/// Background of tokens whose weight is under the threshold.
pub const NEUTRAL: [u8; 3] = [205, 205, 205];
const PAGE: [u8; 3] = [255, 255, 255];
const TOKEN_SCALE: u32 = 2;
const PAD: u32 = 4;
const MAX_WIDTH: u32 = 640;

fn ink_for(bg: [u8; 3]) -> [u8; 3] {
    let luma = 0.299 * bg[0] as f32 + 0.587 * bg[1] as f32 + 0.114 * bg[2] as f32;
    if luma > 110.0 { [0, 0, 0] } else { [255, 255, 255] }
}

/// The instruction token by token: each token on a background coloured by its weight
/// relative to the largest weight (colormap of `w / max`), its weight printed under it.
/// Tokens whose relative weight is under `threshold` get a neutral background, so the
/// picture shows what the policy attends to. Rows wrap at 640 pixels.
pub fn language_heatmap(tokens: &[String], weights: &[f32], threshold: f32) -> RgbImage {
    let rel = normalize_max(&weights[..tokens.len().min(weights.len())]);
    let cells: Vec<(String, String, u32)> = tokens
        .iter()
        .zip(weights)
        .map(|(t, w)| {
            // Spaces are tokens too: show them.
            let shown = if t.trim().is_empty() { "\u{b7}".to_owned() } else { t.clone() };
            let number = format!("{w:.2}");
            let cw = text_width(&shown, TOKEN_SCALE).max(text_width(&number, 1)) + 2 * PAD;
            (shown, number, cw)
        })
        .collect();
    let row_h = GLYPH_HEIGHT * TOKEN_SCALE + GLYPH_HEIGHT + 3 * PAD;
    // Lay out: cells left to right, wrapping.
    let mut pos = Vec::with_capacity(cells.len());
    let (mut x, mut y) = (PAD, PAD);
    for (_, _, cw) in &cells {
        if x + cw > MAX_WIDTH - PAD && x > PAD {
            x = PAD;
            y += row_h + PAD;
        }
        pos.push((x, y));
        x += cw + 1;
    }
    let height = if cells.is_empty() { row_h + 2 * PAD } else { y + row_h + PAD };
    let mut img = RgbImage::from_pixel(MAX_WIDTH, height, Rgb(PAGE));
    for (i, ((shown, number, cw), (x, y))) in cells.iter().zip(&pos).enumerate() {
        let bg = if rel[i] >= threshold && rel[i] > 0.0 { colormap(rel[i]) } else { NEUTRAL };
        fill(&mut img, *x as i64, *y as i64, *cw, row_h, bg);
        let ink = ink_for(bg);
        let tx = x + (cw - text_width(shown, TOKEN_SCALE)) / 2;
        draw_text(&mut img, tx as i64, (y + PAD) as i64, shown, ink, TOKEN_SCALE);
        let nx = x + (cw - text_width(number, 1)) / 2;
        draw_text(&mut img, nx as i64, (y + 2 * PAD + GLYPH_HEIGHT * TOKEN_SCALE) as i64, number, ink, 1);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole grid upsampled to `w x h`, row-major: the reference the overlay's rows
    /// are checked against.
    fn upsample_bilinear(grid: &[f32], rows: usize, cols: usize, w: usize, h: usize) -> Vec<f32> {
        let b = Bilinear::new(grid, rows, cols, w, h);
        let mut out = vec![0.0; w * h];
        for (y, row) in out.chunks_exact_mut(w).enumerate() {
            b.row(y, row);
        }
        out
    }

    #[test]
    fn colormap_ends_and_middle() {
        assert_eq!(colormap(0.0), [0, 0, 4]);
        assert_eq!(colormap(1.0), [252, 255, 164]);
        assert_eq!(colormap(0.5), [188, 55, 84]);
        assert_eq!(colormap(f32::NAN), [0, 0, 4]);
        assert_eq!(colormap(7.0), [252, 255, 164]);
    }

    #[test]
    fn upsampling_is_exact_at_cell_centres_and_between_them() {
        let grid = [0.0, 1.0, 2.0, 3.0]; // 2x2
        let up = upsample_bilinear(&grid, 2, 2, 4, 4);
        // Output pixel centres 0.5..3.5 map to source -0.25, 0.25, 0.75, 1.25 (clamped).
        assert_eq!(up[0], 0.0);
        assert_eq!(up[1], 0.25);
        assert_eq!(up[2], 0.75);
        assert_eq!(up[3], 1.0);
        assert_eq!(up[15], 3.0);
    }

    /// A known grid rendered over a known image: the colours at the hot cell's centre, in a
    /// cold cell, and half-way between are what the blend formula says.
    #[test]
    fn overlay_pixels_at_known_places() {
        let (w, h) = (640u32, 480u32);
        let camera = RgbImage::from_pixel(w, h, Rgb([100, 150, 200]));
        let mut grid = vec![0.0f32; 12 * 16];
        grid[3 * 16 + 5] = 0.02; // row 3, col 5; normalized to 1
        let out = overlay(&camera, &grid, 12, 16, 0.4);
        // alpha 0.4 is 102/256.
        let blend = |c: [u8; 3]| [100u32, 150, 200].iter().zip(c).map(|(s, c)| ((154 * s + 102 * c as u32 + 128) >> 8) as u8).collect::<Vec<_>>();
        // The overlay looks the colour map up in 1024 steps.
        let quantized = |v: f32| (v * 1023.0).round() / 1023.0;
        // Cells are 40x40 pixels; the centre of cell (3, 5) is between pixels 219/220, 139/140.
        // Pixel (220, 140) samples the grid at (5.0125, 3.0125): almost exactly the hot cell.
        let up = upsample_bilinear(&normalize_max(&grid), 12, 16, 640, 480);
        let v = up[140 * 640 + 220];
        assert!(v > 0.95, "{v}");
        assert_eq!(out.get_pixel(220, 140).0.to_vec(), blend(colormap(quantized(v))));
        assert_eq!(blend(colormap(1.0)), vec![161, 192, 186]);
        // A cold cell far away is the camera blended with colormap(0).
        assert_eq!(out.get_pixel(600, 460).0.to_vec(), blend(colormap(0.0)));
        // Half a cell to the right of the centre, the value has fallen to about 1/2.
        let half = up[140 * 640 + 240];
        assert!((half - 0.5).abs() < 0.03, "{half}");
    }

    /// The row-wise, table-driven overlay equals the per-pixel definition everywhere, for
    /// an irregular grid, an uneven image and the extreme weights.
    #[test]
    fn overlay_matches_the_per_pixel_definition() {
        let (w, h, rows, cols) = (203u32, 117u32, 5, 7);
        let camera = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x + y) % 256) as u8]));
        let grid: Vec<f32> = (0..rows * cols).map(|i| ((i * 37) % 11) as f32 * 0.1).collect();
        for alpha in [0.0, 0.4, 1.0] {
            let out = overlay(&camera, &grid, rows, cols, alpha);
            let up = upsample_bilinear(&normalize_max(&grid), rows, cols, w as usize, h as usize);
            let a = (alpha * 256.0).round() as u32;
            for (i, (px, src)) in out.pixels().zip(camera.pixels()).enumerate() {
                let c = colormap((up[i] * 1023.0).round() / 1023.0);
                let want: Vec<u8> = (0..3).map(|k| (((256 - a) * src[k] as u32 + a * c[k] as u32 + 128) >> 8) as u8).collect();
                assert_eq!(px.0.to_vec(), want, "pixel {i}, alpha {alpha}");
            }
        }
    }

    #[test]
    fn heatmap_colours_tokens_over_the_threshold_only() {
        let tokens: Vec<String> = ["红", "色", " ", "a"].iter().map(|s| s.to_string()).collect();
        let weights = [0.6, 0.3, 0.02, 0.08];
        let img = language_heatmap(&tokens, &weights, 0.3);
        // Cell backgrounds at their top-left corners (inside the padding, no glyph there).
        let corner = |i: usize| -> [u8; 3] {
            // Cells are laid out from x = PAD; find each by walking the first row.
            let mut x = PAD;
            for t in &tokens[..i] {
                let shown = if t.trim().is_empty() { "\u{b7}" } else { t };
                x += text_width(shown, TOKEN_SCALE).max(text_width("0.00", 1)) + 2 * PAD + 1;
            }
            img.get_pixel(x + 1, PAD + 1).0
        };
        assert_eq!(corner(0), colormap(1.0)); // 0.6 is the largest
        assert_eq!(corner(1), colormap(0.5)); // 0.3 / 0.6 = 0.5 >= 0.3
        assert_eq!(corner(2), NEUTRAL); // 0.02 / 0.6 < 0.3
        assert_eq!(corner(3), NEUTRAL); // 0.08 / 0.6 = 0.13 < 0.3
        // The first token's glyph is drawn in ink over its cell.
        let ink = ink_for(colormap(1.0));
        let inked = (PAD..PAD + 40).flat_map(|x| (PAD..PAD + 40).map(move |y| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0 == ink).count();
        assert!(inked > 50, "{inked} ink pixels");
    }

    #[test]
    fn long_instructions_wrap() {
        let tokens: Vec<String> = "put the green cylinder on the right side of the tray".chars().map(String::from).collect();
        let weights = vec![1.0 / tokens.len() as f32; tokens.len()];
        let img = language_heatmap(&tokens, &weights, 0.3);
        assert_eq!(img.width(), 640);
        assert!(img.height() > 2 * (GLYPH_HEIGHT * TOKEN_SCALE + GLYPH_HEIGHT), "wrapped to several rows");
    }
}
