//! Process-wide allocator settings for a node that moves a megabyte per camera frame.

/// Keeps freed memory in the process for reuse instead of returning it to the system.
///
/// Every 640x480 image is a 0.9 MB buffer, allocated when a message arrives and freed
/// when its observation is done (and again for each overlay). By default glibc serves
/// such blocks with mmap and returns them with munmap, or trims the heap after a free,
/// so each new buffer pays about 225 page faults (a fraction of a millisecond) on the
/// path from camera to command. With mmap and trimming off, as in the usual real-time
/// Linux setup, the buffers are recycled from the heap; the resident size settles at
/// the working set's peak and stays there (see the soak test).
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}
