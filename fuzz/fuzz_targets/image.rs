//! Camera image decoding and resizing, for every encoding and every resize mode: any
//! sensor_msgs/Image header with any data either decodes to exactly the policy's size
//! or is rejected for the reason that really applies; a decoded value of each channel
//! lies within the range of that channel's source values (the modes average); and the
//! full-size RGB view the explanations draw on has the image's own size and pixels.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vla_controller::core::contract::ResizeMode;
use vla_controller::core::inputs::image::{decode, Expected, ImageError, RawImage};
use vla_controller::core::inputs::CameraImage;

/// Every resize mode of the contract, and whether it pads (with black bars, which lie
/// outside the source's range).
const MODES: &[(&str, ResizeMode, bool)] =
    &[("area", ResizeMode::Area, false), ("bilinear", ResizeMode::Bilinear, false), ("letterbox", ResizeMode::Letterbox, true)];

/// Encodings with their channels and byte offsets of R, G, B (None: unsupported).
const ENCODINGS: &[(&str, Option<(usize, [usize; 3])>)] = &[
    ("rgb8", Some((3, [0, 1, 2]))),
    ("bgr8", Some((3, [2, 1, 0]))),
    ("rgba8", Some((4, [0, 1, 2]))),
    ("bgra8", Some((4, [2, 1, 0]))),
    ("mono8", Some((1, [0, 0, 0]))),
    ("8UC1", Some((1, [0, 0, 0]))),
    ("rgb16", None),
    ("yuv422", None),
    ("32FC1", None),
    ("", None),
];

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    mode: u8,
    /// An index into ENCODINGS, or (past its end) `free_encoding`.
    encoding: u8,
    free_encoding: &'a str,
    /// Most images are small (many executions a second); big ones reach the 32-bit sums.
    big: bool,
    width: u16,
    height: u16,
    /// Bytes of padding per row, or (with `free_step`) the step itself.
    step: u16,
    free_step: bool,
    /// Whether the expected size is the image's own (else `expected_*`).
    size_matches: bool,
    expected_width: u16,
    expected_height: u16,
    out_width: u8,
    out_height: u8,
    /// Whether `data` is cut or repeated to step x height bytes.
    fit_data: bool,
    data: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let (name, mode, pads) = MODES[input.mode as usize % MODES.len()];
    let (encoding, layout) = match ENCODINGS.get(input.encoding as usize) {
        Some((e, l)) => (*e, *l),
        None => (input.free_encoding, ENCODINGS.iter().find(|(e, _)| *e == input.free_encoding).and_then(|(_, l)| *l)),
    };
    let (w, h) = if input.big { (input.width % 700, input.height % 520) } else { (input.width % 48, input.height % 40) };
    let (w, h) = (u32::from(w), u32::from(h));
    let channels = layout.map_or(3, |(c, _)| c) as u32;
    let step = if input.free_step { u32::from(input.step) } else { w * channels + u32::from(input.step % 16) };
    let data = if input.fit_data && !input.data.is_empty() {
        input.data.iter().copied().cycle().take((step * h) as usize).collect()
    } else {
        input.data.to_vec()
    };
    let expected = if input.size_matches { (w, h) } else { (u32::from(input.expected_width), u32::from(input.expected_height)) };
    let (ow, oh) = (1 + input.out_width as usize % 64, 1 + input.out_height as usize % 64);
    let raw = RawImage { width: w, height: h, encoding, step, data: &data };
    let mut out = vec![1, 2, 3]; // whatever a previous image left
    let result = decode(&raw, Expected::Configured(expected.0, expected.1), ow, oh, mode, &mut out);

    // The first rule that the image breaks is the error, in the decoder's order.
    let Some((ch, offs)) = layout else {
        assert!(matches!(result, Err(ImageError::Encoding(ref e)) if e == encoding), "{name}: {result:?}");
        return;
    };
    let why = if (w, h) != expected {
        Some("image size differs from image_width x image_height")
    } else if w == 0 || h == 0 {
        Some("empty image")
    } else if (step as usize) < w as usize * ch {
        Some("step below width x channels")
    } else if data.len() != step as usize * h as usize {
        Some("data length differs from step x height")
    } else {
        None
    };
    match (why, &result) {
        (Some(why), Err(e)) => assert_eq!(e.kind(), why, "{name}: {e}"),
        (None, Ok(())) => {}
        _ => panic!("{name}: expected {why:?}, got {result:?}"),
    }
    if result.is_err() {
        return;
    }
    assert_eq!(out.len(), ow * oh * 3, "{name}: the policy's size");

    // Each output channel within its source channel's range: nothing read from row
    // padding, from another channel or from outside the image.
    let pixel = |x: usize, y: usize, c: usize| data[y * step as usize + x * ch + offs[c]];
    let mut range = [(u8::MAX, u8::MIN); 3];
    for y in 0..h as usize {
        for x in 0..w as usize {
            for (c, r) in range.iter_mut().enumerate() {
                let v = pixel(x, y, c);
                *r = (r.0.min(v), r.1.max(v));
            }
        }
    }
    for px in out.chunks_exact(3) {
        if pads && px == [0, 0, 0] {
            continue; // a bar (or a black pixel)
        }
        for c in 0..3 {
            assert!((range[c].0..=range[c].1).contains(&px[c]), "{name}: channel {c} value {} outside {:?}", px[c], range[c]);
        }
    }

    // The explanations' full-size view: the image's own size and pixels.
    let image = CameraImage { stamp: 1, frame_id: String::new(), width: w, height: h, encoding: encoding.to_owned(), step, data: data.clone().into() };
    let rgb = image.rgb().expect("a decodable image has an RGB view");
    assert_eq!(rgb.dimensions(), (w, h));
    let (x, y) = ((w - 1) as usize, (h - 1) as usize);
    assert_eq!(rgb.get_pixel(w - 1, h - 1).0, [pixel(x, y, 0), pixel(x, y, 1), pixel(x, y, 2)]);
});
