//! The node's threads: real-time priorities, and the one-place mailboxes between them.

use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Spawns thread `name`, which first takes real-time `priority` (0: normal priority) and
/// then runs `f`; returns once the priority is set, so that a caller that says the node
/// is running says it of threads with their priorities.
pub fn spawn_with_priority(name: &str, priority: u32, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    let (ready, started) = std::sync::mpsc::channel();
    let role = name.to_owned();
    let handle = std::thread::Builder::new().name(name.into()).spawn(move || {
        set_thread_priority(priority, &role);
        let _ = ready.send(());
        f()
    })?;
    // An error means the thread ended before it could say so; join reports why.
    let _ = started.recv();
    Ok(handle)
}

/// Puts a thread of this process (0: the calling one) under SCHED_FIFO with `priority`.
fn set_fifo(tid: libc::pid_t, priority: u32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: priority as i32 };
    // SAFETY: a system call on a thread of this process with a valid parameter.
    match unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Gives the calling thread real-time (SCHED_FIFO) priority, unless `priority` is 0.
/// Without permission the node says so once and the thread stays as it is.
pub fn set_thread_priority(priority: u32, thread: &str) {
    if priority == 0 {
        return;
    }
    if let Err(error) = set_fifo(0, priority) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                priority,
                thread,
                %error,
                "thread_priority not applied, running at normal priority (grant rtprio in \
                 /etc/security/limits.conf or CAP_SYS_NICE, or set thread_priority to 0)"
            )
        });
    }
}

/// Gives the middleware's reception threads real-time priority, so that a message is
/// handed over as promptly as it is then handled. Fast DDS names them `dds.shm.<port>`
/// and `dds.udp.<port>`; other threads, and other middlewares' threads, are left alone.
/// Returns how many threads were set.
pub fn set_reception_thread_priority(priority: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut set = 0;
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let reception = name.strip_prefix("dds.shm.").or_else(|| name.strip_prefix("dds.udp."));
        // The port number follows; `dds.shm.wdog` (a watchdog) is not a reception thread.
        if !reception.is_some_and(|port| port.trim().bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let Ok(tid) = task.file_name().to_string_lossy().parse::<libc::pid_t>() else { continue };
        if set_fifo(tid, priority).is_ok() {
            set += 1;
        }
    }
    set
}

/// Nanoseconds since the epoch on the system clock, whatever clock the node follows.
pub fn wall_ns() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// A one-place mailbox: `put` replaces what is there (newest wins), `take` waits.
pub struct LatestSlot<T> {
    value: Mutex<(Option<T>, bool)>,
    ready: Condvar,
}

impl<T> LatestSlot<T> {
    pub fn new() -> Self {
        LatestSlot { value: Mutex::new((None, false)), ready: Condvar::new() }
    }

    /// Returns the value it replaced, if any.
    pub fn put(&self, v: T) -> Option<T> {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        let old = g.0.replace(v);
        self.ready.notify_one();
        old
    }

    /// The newest value, or `None` once closed.
    pub fn take(&self) -> Option<T> {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.1 {
                return None;
            }
            if let Some(v) = g.0.take() {
                return Some(v);
            }
            g = self.ready.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn close(&self) {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.ready.notify_all();
    }
}

impl<T> Default for LatestSlot<T> {
    fn default() -> Self {
        LatestSlot::new()
    }
}
