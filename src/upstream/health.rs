//! Health of one upstream: the result of its last `/readyz` probe (every
//! `--upstream-check-interval`, run by `crate::admin`) and passive ejection after a connection
//! to it could not be opened. Routing prefers healthy upstreams; readiness needs one whose
//! `/readyz` answered 200.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;
/// How long an upstream whose connection failed is skipped.
const EJECTION: Duration = Duration::from_secs(10);

/// What is known of one upstream's health.
#[derive(Debug, Default)]
pub struct Health {
    /// Result of the last `/readyz` probe: unknown, up or down.
    state: AtomicU8,
    /// Passively ejected (connection failures) until this Unix time in milliseconds.
    ejected_until_ms: AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Health {
    /// Routable: not ejected and not known to be down.
    pub fn preferred(&self) -> bool {
        self.state.load(Ordering::Relaxed) != DOWN && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms()
    }

    /// Its last `/readyz` probe answered 200.
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// A connection to it could not be opened: skip it for a while.
    pub fn eject(&self) {
        self.ejected_until_ms.store(now_ms() + EJECTION.as_millis() as u64, Ordering::Relaxed);
    }

    /// Records a probe's result; logs a change.
    pub fn record_probe(&self, upstream: &str, ok: bool) {
        let was = self.state.swap(if ok { UP } else { DOWN }, Ordering::Relaxed);
        if was != UNKNOWN && (was == UP) != ok {
            if ok {
                tracing::info!(upstream, "upstream /readyz answers 200 again");
            } else {
                tracing::warn!(upstream, "upstream /readyz does not answer 200: not routing to it");
            }
        }
    }
}
