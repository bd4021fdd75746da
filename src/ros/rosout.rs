//! The node's log lines go through rcl's logging, as those of rclcpp and rclpy nodes do:
//! to `/rosout` (rqt_console, `ros2 topic echo /rosout`), to the console in ROS's format,
//! and to the log file under `~/.ros/log` (or `$ROS_LOG_DIR`), under the node's logger
//! name and with rcl's severity, so that `--ros-args --log-level debug` and
//! `--log-level <logger>:=warn` decide what is logged.
//!
//! The code logs with `tracing`. [`install`] sets up the process's subscriber: until a
//! node [`attach`]es, events are printed to stderr (filtered by `RUST_LOG`, `info` by
//! default), which is what the subcommands (`inspect`, `replay`, `compare`) use; once the
//! node has attached, every event goes to `rcutils_log` under the node's logger instead,
//! and nothing is printed twice. r2r's `Context::create` has called
//! `rcl_logging_configure` with the command line, which set the log levels and installed
//! rcl's output handler: the console, the log file, and `/rosout` for every logger with
//! a rosout publisher.
//!
//! That publisher is the client library's to create since rcl 7.2 (Jazzy): rclcpp and
//! rclpy call `rcl_logging_rosout_init_publisher_for_node`, `rcl_node_init` no longer
//! does (Humble's still does). r2r 0.9.7 neither calls it nor lends out its rcl node, so
//! [`attach`] creates the node's `/rosout` publisher itself, with rcl's rosout QoS, where
//! rcl has not, and publishes each line there as rcl's handler would have: stamp,
//! severity, logger name, text, file, function and line.

use std::cell::Cell;
use std::ffi::{c_int, CString};
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use r2r::builtin_interfaces::msg::Time;
use r2r::rcl_interfaces::msg::Log;
use r2r::QosProfile;
use r2r_rcl::{
    rcl_logging_rosout_enabled, rcutils_log, rcutils_log_location_t, rcutils_logging_get_logger_effective_level,
    RCUTILS_LOG_SEVERITY,
};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::filter::{EnvFilter, FilterExt};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where events go once a node has attached: its logger, that logger's level, and the
/// node's `/rosout` publisher where this module made one.
pub struct RclSink {
    logger: OnceLock<CString>,
    /// The lowest rcutils severity the logger lets through (10 debug ... 50 fatal).
    /// rcl sets the levels once, from the command line, before the node exists (r2r has
    /// no service to change them later), so reading it once at `attach` is enough; it
    /// spares every disabled `debug!` a lock and a call into rcutils.
    threshold: AtomicI32,
    rosout: Mutex<Option<r2r::Publisher<Log>>>,
}

/// rcl's rosout QoS (`rmw_qos_profile_rosout_default`): a late rqt_console still gets the
/// last 10 s of lines.
fn rosout_qos() -> QosProfile {
    QosProfile::default().keep_last(1000).reliable().transient_local().lifespan(Duration::from_secs(10))
}

thread_local! {
    /// Set while this thread publishes a line on `/rosout`: r2r reports a failed publish
    /// with `log::error!`, which comes back here and must not publish (nor wait for the
    /// lock this thread holds); it still reaches the console and the log file.
    static PUBLISHING: Cell<bool> = const { Cell::new(false) };
}

/// The process's sink, the one [`install`] and [`attach`] use.
static NODE: RclSink = RclSink::new();

/// rcutils' and rcl's logging state (levels, output handlers, rcl's map of rosout
/// publishers) has no locks of its own: rclcpp and r2r log under one global lock, and
/// so does this module, which also keeps lines from different threads whole.
static RCUTILS: Mutex<()> = Mutex::new(());

impl RclSink {
    pub const fn new() -> Self {
        RclSink {
            logger: OnceLock::new(),
            threshold: AtomicI32::new(RCUTILS_LOG_SEVERITY::RCUTILS_LOG_SEVERITY_INFO as i32),
            rosout: Mutex::new(None),
        }
    }

    /// From now on, events go to rcl's logging under `logger`, and to `rosout` when given.
    /// Only the first call counts: a process runs one node.
    pub fn attach(&self, logger: &str, rosout: Option<r2r::Publisher<Log>>) {
        let Ok(name) = CString::new(logger) else { return };
        let level = {
            let _lock = lock();
            // SAFETY: a valid C string; rcutils' logging was initialized by
            // `rcl_logging_configure` (r2r's `Context::create`) or `rcutils_logging_initialize`.
            unsafe { rcutils_logging_get_logger_effective_level(name.as_ptr()) }
        };
        if level > 0 {
            self.threshold.store(level, Ordering::Relaxed);
        }
        *self.rosout.lock().unwrap_or_else(|e| e.into_inner()) = rosout;
        let _ = self.logger.set(name);
    }

    fn attached(&self) -> bool {
        self.logger.get().is_some()
    }

    fn enabled(&self, level: &Level) -> bool {
        severity(level) >= self.threshold.load(Ordering::Relaxed)
    }

    fn log(&self, meta: &Metadata<'_>, text: &str) {
        let Some(logger) = self.logger.get() else { return };
        let file = c_string(meta.file().unwrap_or(""));
        // Rust has no function names at run time; the module path says where as well.
        let function = c_string(meta.module_path().unwrap_or(""));
        let message = c_string(text);
        let location = rcutils_log_location_t {
            function_name: function.as_ptr(),
            file_name: file.as_ptr(),
            line_number: meta.line().unwrap_or(0) as usize,
        };
        {
            let _lock = lock();
            // SAFETY: every pointer is a valid C string that outlives the call, and the
            // format "%s" takes exactly the one string argument given (the text is never
            // a format).
            unsafe { rcutils_log(&location, severity(meta.level()), logger.as_ptr(), c"%s".as_ptr(), message.as_ptr()) };
        }
        if PUBLISHING.get() {
            return;
        }
        let rosout = self.rosout.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(publisher) = rosout.as_ref() {
            let text = |c: &CString| c.to_string_lossy().into_owned();
            let line = log_message(SystemTime::now(), meta, &text(logger), &text(&message));
            PUBLISHING.set(true);
            // A failed publish is reported by r2r itself (to the console and the file).
            let _ = publisher.publish(&line);
            PUBLISHING.set(false);
        }
    }
}

/// The `/rosout` message of a line, as rcl's rosout handler fills it.
fn log_message(now: SystemTime, meta: &Metadata<'_>, logger: &str, text: &str) -> Log {
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Log {
        stamp: Time { sec: since_epoch.as_secs() as i32, nanosec: since_epoch.subsec_nanos() },
        level: severity(meta.level()) as u8,
        name: logger.to_owned(),
        msg: text.to_owned(),
        file: meta.file().unwrap_or("").to_owned(),
        function: meta.module_path().unwrap_or("").to_owned(),
        line: meta.line().unwrap_or(0),
    }
}

impl Default for RclSink {
    fn default() -> Self {
        Self::new()
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    RCUTILS.lock().unwrap_or_else(|e| e.into_inner())
}

/// rcutils' severity of a tracing level; rcutils has no trace level, so trace is debug.
fn severity(level: &Level) -> c_int {
    use RCUTILS_LOG_SEVERITY::*;
    (match *level {
        Level::TRACE | Level::DEBUG => RCUTILS_LOG_SEVERITY_DEBUG,
        Level::INFO => RCUTILS_LOG_SEVERITY_INFO,
        Level::WARN => RCUTILS_LOG_SEVERITY_WARN,
        Level::ERROR => RCUTILS_LOG_SEVERITY_ERROR,
    }) as c_int
}

/// A C string of any text: a NUL inside (from a message's contents, say) is written as
/// `\0` instead of cutting the line short or failing.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// The tracing layer that hands each event to rcl's logging once a node has attached.
pub struct RclLayer(pub &'static RclSink);

impl<S: Subscriber> Layer<S> for RclLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let sink = self.0;
        if !sink.attached() || !sink.enabled(event.metadata().level()) {
            return;
        }
        // A `log` record (r2r logs with the `log` crate) carries its file, line and module
        // as fields; its metadata proper are those of the bridge.
        let normalized = event.normalized_metadata();
        sink.log(normalized.as_ref().unwrap_or(event.metadata()), &text(event));
    }
}

/// Lets events through to the console printer only while no node has attached.
struct UntilAttached(&'static RclSink);

impl<S> Filter<S> for UntilAttached {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        !self.0.attached()
    }

    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // Decided per event: the answer changes when the node attaches.
        tracing::subscriber::Interest::sometimes()
    }
}

/// The line of an event as the console printer writes it: the message, then each field
/// as ` name=value` (strings quoted).
pub fn text(event: &Event<'_>) -> String {
    let mut line = Line::default();
    event.record(&mut line);
    line.message + &line.fields
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => _ = write!(self.message, "{value:?}"),
            // Where a `log` record came from: rcutils gets it as the line's location.
            name if name.starts_with("log.") => {}
            name => _ = write!(self.fields, " {name}={value:?}"),
        }
    }
}

/// Sets up the process's tracing subscriber: stderr until a node attaches, then rcl's
/// logging. Also turns `log` records (r2r's) into events.
pub fn install() {
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")).and(UntilAttached(&NODE)));
    tracing_subscriber::registry().with(console).with(RclLayer(&NODE)).init();
}

/// From now on the process's log lines go to rcl's logging under `node`'s logger name:
/// `/rosout`, the console and the log file. Call it once the node exists.
pub fn attach(node: &mut r2r::Node) {
    // SAFETY: a plain query of rcl's logging state, set by `rcl_logging_configure`.
    let wanted = unsafe { rcl_logging_rosout_enabled() };
    let (name, namespace) = (node.name().unwrap_or_default(), node.namespace().unwrap_or_default());
    // Where rcl made the node's publisher (Humble), its handler already publishes.
    let has_one = node
        .get_publishers_info_by_topic("/rosout", false)
        .is_ok_and(|found| found.iter().any(|p| p.node_name == name && p.node_namespace == namespace));
    let rosout = if wanted && !has_one { Some(node.create_publisher::<Log>("/rosout", rosout_qos())) } else { None };
    match rosout {
        Some(Err(e)) => {
            NODE.attach(node.logger(), None);
            tracing::warn!(error = %e, "no /rosout publisher: log lines go to the console and the log file only");
        }
        rosout => NODE.attach(node.logger(), rosout.and_then(Result::ok)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2r_rcl::{
        rcutils_logging_initialize, rcutils_logging_set_logger_level, rcutils_logging_set_output_handler,
        rcutils_time_point_value_t, va_list,
    };
    use std::ffi::{c_char, CStr};
    use tracing_subscriber::Registry;

    /// What rcutils' output handler was given for one line.
    #[derive(Debug)]
    struct Received {
        severity: c_int,
        logger: String,
        file: String,
        line: usize,
        function: String,
        format: String,
    }

    static RECEIVED: Mutex<Vec<Received>> = Mutex::new(Vec::new());
    /// rcutils' output handler and levels are the process's: one test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    unsafe extern "C" fn record(
        location: *const rcutils_log_location_t,
        severity: c_int,
        name: *const c_char,
        _timestamp: rcutils_time_point_value_t,
        format: *const c_char,
        _args: *mut va_list,
    ) {
        let s = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        let loc = unsafe { &*location };
        let got = Received {
            severity,
            logger: s(name),
            file: s(loc.file_name),
            line: loc.line_number,
            function: s(loc.function_name),
            format: s(format),
        };
        RECEIVED.lock().unwrap_or_else(|e| e.into_inner()).push(got);
    }

    /// Runs `f` with a subscriber holding only an `RclLayer` on a fresh sink (attached to
    /// `logger` when given, after setting that logger's level), and returns what reached
    /// rcutils' output handler.
    fn through_rcutils(logger: Option<&str>, level: Option<RCUTILS_LOG_SEVERITY>, f: impl FnOnce()) -> Vec<Received> {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let sink: &'static RclSink = Box::leak(Box::new(RclSink::new()));
        unsafe {
            rcutils_logging_initialize();
            rcutils_logging_set_output_handler(Some(record));
        }
        if let Some(name) = logger {
            if let Some(level) = level {
                let c = CString::new(name).unwrap();
                unsafe { rcutils_logging_set_logger_level(c.as_ptr(), level as c_int) };
            }
            sink.attach(name, None);
        }
        RECEIVED.lock().unwrap().clear();
        tracing::subscriber::with_default(Registry::default().with(RclLayer(sink)), f);
        let got = std::mem::take(&mut *RECEIVED.lock().unwrap());
        assert!(got.iter().all(|g| g.format == "%s"), "the text is passed as an argument, never as the format");
        got
    }

    #[test]
    fn each_level_reaches_rcutils_with_its_severity_logger_and_place() {
        let line = line!() + 3;
        let got = through_rcutils(Some("vla_test_severities"), None, || {
            tracing::debug!("hidden at the default level");
            tracing::info!(x = 1, "i");
            tracing::warn!("w");
            tracing::error!("e");
        });
        let severities: Vec<c_int> = got.iter().map(|g| g.severity).collect();
        assert_eq!(severities, [20, 30, 40], "debug is below rcutils' default level, info");
        for (k, g) in got.iter().enumerate() {
            assert_eq!(g.logger, "vla_test_severities");
            assert!(g.file.ends_with("rosout.rs"), "{g:?}");
            assert_eq!(g.line, (line + k as u32) as usize);
            assert_eq!(g.function, "vla_controller::ros::rosout::tests");
        }
    }

    #[test]
    fn the_loggers_level_decides() {
        use RCUTILS_LOG_SEVERITY::*;
        let all = || {
            tracing::trace!("t");
            tracing::debug!("d");
            tracing::info!("i");
            tracing::warn!("w");
        };
        let severities = |got: Vec<Received>| got.iter().map(|g| g.severity).collect::<Vec<_>>();
        assert_eq!(severities(through_rcutils(Some("vla_test_debug"), Some(RCUTILS_LOG_SEVERITY_DEBUG), all)), [10, 10, 20, 30]);
        assert_eq!(severities(through_rcutils(Some("vla_test_warn"), Some(RCUTILS_LOG_SEVERITY_WARN), all)), [30]);
        // A child logger follows its parent's level, as `--log-level arm1:=warn` expects.
        assert_eq!(severities(through_rcutils(Some("vla_test_warn.child"), None, all)), [30]);
    }

    #[test]
    fn a_log_record_keeps_its_own_place() {
        // r2r logs with the `log` crate; `install` bridges it into tracing.
        let _ = tracing_log::LogTracer::init();
        let line = line!() + 1;
        let got = through_rcutils(Some("vla_test_log_crate"), None, || log::warn!("from the log crate"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].severity, got[0].line), (30, line as usize));
        assert!(got[0].file.ends_with("rosout.rs") && got[0].function == "vla_controller::ros::rosout::tests", "{got:?}");
    }

    #[test]
    fn nothing_goes_to_rcutils_before_a_node_attaches() {
        assert!(through_rcutils(None, None, || tracing::error!("to stderr only")).is_empty());
    }

    #[test]
    fn a_nul_in_the_text_neither_panics_nor_cuts_the_line() {
        let got = through_rcutils(Some("vla_test_nul"), None, || tracing::info!("before\0after"));
        assert_eq!(got.len(), 1);
        assert_eq!(c_string("before\0after").to_str().unwrap(), "before\\0after");
    }

    /// Records the text of each event, as `RclLayer` would send it.
    struct Texts(std::sync::Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Texts {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(text(event));
        }
    }

    #[test]
    fn the_text_is_the_message_then_the_fields() {
        let texts = std::sync::Arc::new(Mutex::new(Vec::new()));
        let path = std::path::Path::new("/p/demo.pt");
        tracing::subscriber::with_default(Registry::default().with(Texts(texts.clone())), || {
            tracing::info!(policy = "demo", path = %path.display(), chunk_length = 10, "policy loaded and checked");
            tracing::warn!(cameras = ?["main", "side"], "{} of {}", 2, 3);
            tracing::info!("no fields");
        });
        assert_eq!(
            *texts.lock().unwrap(),
            [
                r#"policy loaded and checked policy="demo" path=/p/demo.pt chunk_length=10"#,
                r#"2 of 3 cameras=["main", "side"]"#,
                "no fields",
            ]
        );
    }
}
