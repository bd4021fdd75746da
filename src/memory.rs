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

/// What the process holds, in bytes.
///
/// With trimming off (above) the resident size is the heap's high-water mark: it only
/// ever steps up, when the working set reaches a new peak, and never comes down. The
/// heap's own figures tell that reserve apart from what the node uses at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident set size (/proc/self/statm).
    pub resident: u64,
    /// Bytes in allocated blocks, in every arena.
    pub heap_in_use: u64,
    /// Bytes the allocator holds from the system: in use, and free for reuse.
    pub heap_held: u64,
}

/// The process's memory now; `None` where /proc cannot be read.
pub fn usage() -> Option<Usage> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf and mallinfo2 only read process-wide values; mallinfo2 locks each
    // arena while it sums it (microseconds, once per diagnostics period).
    let (page, info) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::mallinfo2()) };
    Some(Usage {
        resident: pages * u64::try_from(page).ok()?,
        heap_in_use: (info.uordblks + info.hblkhd) as u64,
        heap_held: (info.arena + info.hblkhd) as u64,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Usage {
    /// The /diagnostics message: the resident size.
    pub fn message(&self) -> String {
        format!("resident {:.0} MiB", mib(self.resident))
    }

    /// The figures as /diagnostics values, in MiB.
    pub fn key_values(&self) -> Vec<(String, String)> {
        [("resident_mib", self.resident), ("heap_in_use_mib", self.heap_in_use), ("heap_held_mib", self.heap_held)]
            .into_iter()
            .map(|(key, bytes)| (key.to_owned(), format!("{:.1}", mib(bytes))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_shows_in_the_heap_in_use() {
        // Other tests allocate and free beside this one: a block far larger than theirs.
        const BLOCK: u64 = 256 << 20;
        let before = usage().unwrap();
        let block = std::hint::black_box(vec![1u8; BLOCK as usize]);
        let during = usage().unwrap();
        assert!(during.heap_in_use >= before.heap_in_use + BLOCK - (32 << 20), "{before:?} {during:?}");
        assert!(during.heap_held >= during.heap_in_use && during.resident >= BLOCK, "{during:?}");
        drop(block);
        assert!(usage().unwrap().heap_in_use + BLOCK - (32 << 20) <= during.heap_in_use);
    }
}
