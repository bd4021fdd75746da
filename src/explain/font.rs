//! Bitmap text with the glyphs embedded in the binary (assets/glyphs.bin, from GNU
//! Unifont), so instructions in Chinese and English render on a robot with no fonts.

use image::{Rgb, RgbImage};

static GLYPHS: &[u8] = include_bytes!("../../assets/glyphs.bin");
const MAGIC: &[u8] = b"VLAGLYPH1";
const RECORD: usize = 4 + 1 + 32;

/// Height of a glyph in pixels at scale 1.
pub const GLYPH_HEIGHT: u32 = 16;

fn records() -> &'static [u8] {
    // The embedded asset is made by scripts/make_glyphs.py and checked by the tests.
    debug_assert!(GLYPHS.starts_with(MAGIC));
    &GLYPHS[MAGIC.len() + 4..]
}

/// Width in pixels at scale 1 (8 or 16) and the 16 rows of 16 bits of `c`, if the
/// embedded set has it.
fn glyph(c: char) -> Option<(u32, &'static [u8])> {
    let recs = records();
    let n = recs.len() / RECORD;
    let cp = c as u32;
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let r = &recs[mid * RECORD..(mid + 1) * RECORD];
        let rcp = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        match rcp.cmp(&cp) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some((r[4] as u32, &r[5..])),
        }
    }
    None
}

/// Width of `c` in pixels at scale 1; characters without a glyph are drawn as a box
/// 8 pixels wide (16 for wide scripts).
pub fn char_width(c: char) -> u32 {
    glyph(c).map_or(if (c as u32) < 0x1100 { 8 } else { 16 }, |(w, _)| w)
}

pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().map(|c| char_width(c) * scale).sum()
}

/// Draws `text` with its top-left corner at (x, y); clipped to the image.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, color: [u8; 3], scale: u32) {
    let mut cx = x;
    for c in text.chars() {
        let w = char_width(c);
        match glyph(c) {
            Some((_, rows)) => {
                for gy in 0..GLYPH_HEIGHT {
                    let bits = u16::from_be_bytes([rows[gy as usize * 2], rows[gy as usize * 2 + 1]]);
                    for gx in 0..w {
                        if bits & (0x8000 >> gx) != 0 {
                            fill(img, cx + (gx * scale) as i64, y + (gy * scale) as i64, scale, scale, color);
                        }
                    }
                }
            }
            None => {
                // A hollow box, so a missing glyph is visible as such.
                let (bw, bh) = ((w - 2) * scale, (GLYPH_HEIGHT - 2) * scale);
                let (bx, by) = (cx + scale as i64, y + scale as i64);
                fill(img, bx, by, bw, scale, color);
                fill(img, bx, by + (bh - scale) as i64, bw, scale, color);
                fill(img, bx, by, scale, bh, color);
                fill(img, bx + (bw - scale) as i64, by, scale, bh, color);
            }
        }
        cx += (w * scale) as i64;
    }
}

/// Fills a rectangle, clipped to the image.
pub fn fill(img: &mut RgbImage, x: i64, y: i64, w: u32, h: u32, color: [u8; 3]) {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    for py in y.max(0)..(y + h as i64).min(ih) {
        for px in x.max(0)..(x + w as i64).min(iw) {
            img.put_pixel(px as u32, py as u32, Rgb(color));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_latin_and_cjk() {
        for c in ['a', 'Z', '0', ' ', '红', '绿', '蓝', '黄', '圆', '柱', '体', '托', '盘', '，', '。'] {
            assert!(glyph(c).is_some(), "no glyph for {c}");
        }
        assert_eq!(char_width('a'), 8);
        assert_eq!(char_width('红'), 16);
        assert_eq!(text_width("a红", 2), 48);
    }

    #[test]
    fn draws_set_pixels_inside_the_glyph_box_only() {
        let mut img = RgbImage::new(40, 20);
        draw_text(&mut img, 2, 2, "红", [255, 0, 0], 1);
        let lit: Vec<(u32, u32)> = img.enumerate_pixels().filter(|p| p.2 .0 == [255, 0, 0]).map(|p| (p.0, p.1)).collect();
        assert!(lit.len() > 30, "a CJK glyph lights many pixels");
        assert!(lit.iter().all(|(x, y)| (2..18).contains(x) && (2..18).contains(y)));
    }

    #[test]
    fn records_are_sorted() {
        let recs = records();
        let cps: Vec<u32> = recs.chunks_exact(RECORD).map(|r| u32::from_le_bytes([r[0], r[1], r[2], r[3]])).collect();
        assert!(cps.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(u32::from_le_bytes(GLYPHS[MAGIC.len()..MAGIC.len() + 4].try_into().unwrap()) as usize, cps.len());
    }
}
