//! Camera images read from the message the middleware handed over (r2r's
//! `subscribe_native`), where r2r's typed subscriptions would copy the pixels into a new
//! vector first.

use r2r::{sensor_msgs::msg::Image, NativeMsg, WrappedTypesupport};

use crate::core::inputs::{CameraImage, Pixels};

/// The image of a message as the middleware handed it over (r2r's `subscribe_native`):
/// the pixels stay in the taken message, where r2r's typed subscriptions would copy
/// them into a new vector.
pub fn camera_image_native(msg: NativeMsg<Image>) -> CameraImage {
    let h = &msg.header;
    let stamp = ns(h.stamp.sec, h.stamp.nanosec);
    let (frame_id, encoding) = (h.frame_id.to_str().to_owned(), msg.encoding.to_str().to_owned());
    let (width, height, step) = (msg.width, msg.height, msg.step);
    let data = if msg.is_loaned {
        // A loaned message goes back to its subscription when dropped, which must happen
        // on this thread: copy its pixels instead.
        native_pixels(&msg).to_vec().into()
    } else {
        Pixels::new(NativeImage(msg))
    };
    CameraImage { stamp, frame_id, width, height, encoding, step, data }
}

type NativeImageStruct = <Image as WrappedTypesupport>::CStruct;

fn native_pixels(msg: &NativeImageStruct) -> &[u8] {
    let seq = &msg.data;
    if seq.size == 0 || seq.data.is_null() {
        return &[];
    }
    // SAFETY: a rosidl sequence holds `size` initialized elements at `data`, alive as
    // long as its message.
    unsafe { std::slice::from_raw_parts(seq.data, seq.size) }
}

/// A taken sensor_msgs/Image that is not loaned, readable as its pixel bytes.
struct NativeImage(NativeMsg<Image>);

// SAFETY: a message that is not loaned is a heap allocation that this wrapper alone owns
// (r2r frees it with the message type's destroy function, which needs no particular
// thread), and after the take it is only read.
unsafe impl Send for NativeImage {}
unsafe impl Sync for NativeImage {}

impl AsRef<[u8]> for NativeImage {
    fn as_ref(&self) -> &[u8] {
        native_pixels(&self.0)
    }
}


/// A builtin_interfaces/Time's fields as nanoseconds.
fn ns(sec: i32, nanosec: u32) -> i64 {
    super::msgs::time_ns(sec, nanosec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ros::msgs::{camera_image, header};

    #[test]
    fn a_native_image_reads_as_the_message_it_was_made_from() {
        let msg = Image {
            header: header(1_700_000_000_123_456_789, "cam_main"),
            height: 2,
            width: 3,
            encoding: "bgr8".into(),
            is_bigendian: 0,
            step: 9,
            data: (0..18).collect(),
        };
        let image = camera_image_native(NativeMsg::from(&msg));
        let moved = camera_image(msg);
        assert_eq!(image.stamp, 1_700_000_000_123_456_789);
        assert_eq!(format!("{image:?}"), format!("{moved:?}"));
        assert_eq!(&image.data[..], &moved.data[..]);

        let empty = Image { encoding: "rgb8".into(), ..Default::default() };
        assert!(camera_image_native(NativeMsg::from(&empty)).data.is_empty());
    }
}
