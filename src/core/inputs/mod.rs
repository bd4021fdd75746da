//! The node's inputs as plain values: camera images ([`image`]: decoding and resizing to
//! the policy's input), joint states ([`joints`]: matched by name, paired by stamp) and
//! instructions ([`tokenizer`]).

pub mod image;
pub mod joints;
pub mod tokenizer;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use self::image::{decode, decode_resize, Expected, ImageError, RawImage};
use crate::core::config::Config;
use crate::core::contract::{CameraSpec, PolicyMeta};

/// Decodes camera images to the policy's input size, each camera by its own rules. Holds
/// no state, so the node can run it outside any lock, on the thread that received the
/// image.
#[derive(Debug, Clone)]
pub struct ImageDecoder {
    cameras: Vec<(Expected, CameraSpec)>,
}

impl ImageDecoder {
    /// A version-1 policy's cameras have the configured size (`image_width` x
    /// `image_height`); a version-2 policy names each camera's expected size, or none.
    pub fn new(cfg: &Config, meta: &PolicyMeta) -> Self {
        let expected = |c: &CameraSpec| match (meta.contract_version, c.expected_width, c.expected_height) {
            (1, _, _) => Expected::Configured(cfg.image_width, cfg.image_height),
            (_, Some(w), Some(h)) => Expected::Policy(w, h),
            _ => Expected::Any,
        };
        ImageDecoder { cameras: meta.cameras.iter().map(|c| (expected(c), c.clone())).collect() }
    }

    /// Camera `camera`'s image at the policy's input size.
    pub fn decode(&self, camera: usize, raw: &RawImage<'_>) -> Result<Vec<u8>, ImageError> {
        let (expected, c) = &self.cameras[camera];
        let mut out = Vec::new();
        decode(raw, *expected, c.width, c.height, c.resize, &mut out)?;
        Ok(out)
    }
}

/// A camera image as it arrived, kept with the observation so that explanations can
/// draw on it at full size.
#[derive(Debug, Clone)]
pub struct CameraImage {
    pub stamp: i64,
    pub frame_id: String,
    pub width: u32,
    pub height: u32,
    pub encoding: String,
    pub step: u32,
    pub data: Pixels,
}

/// The bytes of an image: a vector, or the buffer a middleware received them in, kept
/// as it is (the node keeps the taken message, so a 0.9 MB image is not copied once
/// more on its way to the decoder).
#[derive(Clone)]
pub struct Pixels(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl Pixels {
    pub fn new(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> Self {
        Pixels(Arc::new(bytes))
    }
}

impl From<Vec<u8>> for Pixels {
    fn from(bytes: Vec<u8>) -> Self {
        Pixels::new(bytes)
    }
}

impl std::ops::Deref for Pixels {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl fmt::Debug for Pixels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pixels({} bytes)", self.len())
    }
}

impl CameraImage {
    pub fn raw(&self) -> RawImage<'_> {
        RawImage { width: self.width, height: self.height, encoding: &self.encoding, step: self.step, data: &self.data }
    }

    /// The image as RGB at its own size: the message's own buffer when it is already
    /// tightly packed rgb8 (no copy), otherwise converted.
    pub fn rgb(&self) -> Result<::image::ImageBuffer<::image::Rgb<u8>, Cow<'_, [u8]>>, ImageError> {
        // In usize: a width or step near u32::MAX must not wrap into a false match.
        let (w, h, step) = (self.width as usize, self.height as usize, self.step as usize);
        let data = if self.encoding == "rgb8" && step == w * 3 && self.data.len() == step * h {
            Cow::Borrowed(&self.data[..])
        } else {
            let mut out = Vec::new();
            decode_resize(&self.raw(), (self.width, self.height), w, h, &mut out)?;
            Cow::Owned(out)
        };
        // Exactly width x height x 3 bytes: checked above, or written so by decode_resize.
        Ok(::image::ImageBuffer::from_raw(self.width, self.height, data).expect("w x h x 3 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(width: u32, height: u32, encoding: &str, step: u32, data: Vec<u8>) -> CameraImage {
        CameraImage { stamp: 1, frame_id: String::new(), width, height, encoding: encoding.into(), step, data: data.into() }
    }

    #[test]
    fn rgb_view_borrows_packed_rgb8_and_converts_the_rest() {
        let img = camera(2, 1, "rgb8", 6, vec![1, 2, 3, 4, 5, 6]);
        assert!(matches!(img.rgb().unwrap().into_raw(), Cow::Borrowed(_)));
        let img = camera(1, 1, "bgr8", 3, vec![1, 2, 3]);
        assert_eq!(img.rgb().unwrap().get_pixel(0, 0).0, [3, 2, 1]);
    }

    #[test]
    fn rgb_view_of_a_header_whose_width_times_3_wraps_is_an_error_not_a_panic() {
        // 0x5555_5556 x 3 wraps to 2 in u32: step 2 and 2 bytes looked tightly packed.
        let img = camera(0x5555_5556, 1, "rgb8", 2, vec![0, 0]);
        assert!(matches!(img.rgb(), Err(ImageError::Step { .. })));
    }
}
