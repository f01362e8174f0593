//! The service's clock. Time is injected so that tests can skew it (signed timestamps at the
//! window's edges) without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock relative to the system clock (tests only need this).
    pub fn set_offset(&self, offset: Duration) {
        self.offset_ms
            .store(offset.num_milliseconds(), Ordering::Relaxed);
    }
}
