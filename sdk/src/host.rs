//! What the host offers a plugin: its wall clock and its structured log.
//!
//! Inside Wasm these call the host's imports. Natively (under `cargo test`)
//! they use [`crate::testing`]'s fake clock and captured log instead.
//!
//! The `log` crate's macros (`log::info!` …) and panics are forwarded to the
//! host's log once the plugin is initialised; the host tags each line with the
//! plugin's name and rate-limits it.

pub use log::Level;

/// The host's wall clock in nanoseconds since the Unix epoch. Simulations
/// drive this clock, so use it rather than `std::time::SystemTime`.
pub fn now_ns() -> u64 {
    #[cfg(target_family = "wasm")]
    {
        crate::__private::bindings::identity::flowattr::plugin::host::now_ns()
    }
    #[cfg(not(target_family = "wasm"))]
    {
        crate::testing::fake_now_ns()
    }
}

/// Writes one line to the host's log.
pub fn log(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    {
        use crate::__private::bindings::identity::flowattr::plugin::host as wit;
        let level = match level {
            Level::Error => wit::Level::Error,
            Level::Warn => wit::Level::Warn,
            Level::Info => wit::Level::Info,
            Level::Debug => wit::Level::Debug,
            Level::Trace => wit::Level::Trace,
        };
        wit::log(level, message);
    }
    #[cfg(not(target_family = "wasm"))]
    {
        crate::testing::capture_log(level, message);
    }
}

/// Forwards the `log` crate to the host at `Info` and above.
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            log(record.level(), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

/// Routes `log` records and panic messages to the host. Idempotent.
pub(crate) fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
        #[cfg(target_family = "wasm")]
        std::panic::set_hook(Box::new(|info| {
            log(Level::Error, &format!("plugin panicked: {info}"))
        }));
    }
}
