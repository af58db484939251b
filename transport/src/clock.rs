//! This host's wall clock, as frames' send and receive times read it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, Unix-epoch nanoseconds (0 before 1970).
pub(crate) fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
