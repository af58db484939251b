//! The constants of format version 3, shared by the writer and the reader
//! so the two cannot drift: header fields, column order, and the byte codes
//! of every enum. The README describes the same layout for other languages.

use flowattr_sdk::{AttributionSource, FlowEnd, Initiator, Protocol, UnattributedReason};

/// The first four bytes of every chunk.
pub const MAGIC: [u8; 4] = *b"FACL";
/// The format version this crate writes (and reads).
pub const VERSION: u8 = 3;
/// The oldest format version this crate reads: version 2 is version 3
/// without the `record_id` column (its rows read as 0, unassigned).
pub const OLDEST_READABLE_VERSION: u8 = 2;
/// Magic (4), version (1), flags (1), row count (u32 LE), body length (u32 LE).
pub const HEADER_LEN: usize = 14;
/// Header flag: the `pid`, `cgroup_id` and `netns_id` columns hold values.
pub const FLAG_PROCESS: u8 = 0b0000_0001;
/// Every row takes at least this many body bytes (4 byte-columns, two IPv4
/// addresses, two ports, 11 varint columns of at least a byte each, the
/// 8-byte record id); a reader uses it to refuse a row count the body
/// cannot hold before allocating for it.
pub const MIN_ROW_BYTES: usize = 4 + 8 + 4 + 11 + 8;

/// [`MIN_ROW_BYTES`] of a chunk of format `version` (version 2 has no
/// record id column).
pub const fn min_row_bytes(version: u8) -> usize {
    if version >= 3 {
        MIN_ROW_BYTES
    } else {
        MIN_ROW_BYTES - 8
    }
}

/// Workload presence mask: which optional attributes follow the id.
pub const HAS_APP: u8 = 1 << 0;
pub const HAS_CLUSTER: u8 = 1 << 1;
pub const HAS_STACK: u8 = 1 << 2;
pub const HAS_ACCOUNT: u8 = 1 << 3;
pub const HAS_REGION: u8 = 1 << 4;
pub const HAS_ALL: u8 = 0b0001_1111;

/// Families column: bit set = that side's address is IPv6.
pub const LOCAL_V6: u8 = 1 << 0;
pub const REMOTE_V6: u8 = 1 << 1;

/// Side codes: 0 pending, 1–8 an unattributed reason, 9 + k attribution k.
pub const SIDE_PENDING: u64 = 0;
pub const SIDE_ATTRIBUTED: u64 = 9;

/// The columns, in the order they follow the dictionaries.
pub mod col {
    pub const START: usize = 0;
    pub const DURATION: usize = 1;
    pub const PROTOCOL: usize = 2;
    pub const INITIATOR: usize = 3;
    pub const END_STATE: usize = 4;
    pub const FAMILIES: usize = 5;
    pub const LOCAL_V4: usize = 6;
    pub const LOCAL_V6: usize = 7;
    pub const REMOTE_V4: usize = 8;
    pub const REMOTE_V6: usize = 9;
    pub const LOCAL_PORT: usize = 10;
    pub const REMOTE_PORT: usize = 11;
    pub const BYTES_SENT: usize = 12;
    pub const BYTES_RECEIVED: usize = 13;
    pub const PACKETS_SENT: usize = 14;
    pub const PACKETS_RECEIVED: usize = 15;
    pub const RETRANSMITS: usize = 16;
    pub const SRTT_US: usize = 17;
    pub const PID: usize = 18;
    pub const CGROUP_ID: usize = 19;
    pub const NETNS_ID: usize = 20;
    pub const WEIGHT: usize = 21;
    pub const LOCAL_SIDE: usize = 22;
    pub const REMOTE_SIDE: usize = 23;
    /// `u64` little-endian per row: the record id (0 unassigned). Not in
    /// version 2 chunks.
    pub const RECORD_ID: usize = 24;
    /// How many columns a version 3 chunk has.
    pub const COUNT: usize = 25;

    /// Column names, for errors and the README.
    pub const NAMES: [&str; COUNT] = [
        "start_ns",
        "duration_ns",
        "protocol",
        "initiator",
        "end_state",
        "families",
        "local_v4",
        "local_v6",
        "remote_v4",
        "remote_v6",
        "local_port",
        "remote_port",
        "bytes_sent",
        "bytes_received",
        "packets_sent",
        "packets_received",
        "retransmits",
        "srtt_us",
        "pid",
        "cgroup_id",
        "netns_id",
        "weight",
        "local_side",
        "remote_side",
        "record_id",
    ];
}

/// Declares the byte code of each variant of a fieldless enum, both ways.
macro_rules! codes {
    ($ty:ty, $to:ident, $from:ident, { $($variant:ident = $code:expr),+ $(,)? }) => {
        pub const fn $to(v: $ty) -> u8 {
            match v { $(<$ty>::$variant => $code),+ }
        }
        pub const fn $from(code: u64) -> Option<$ty> {
            match code { $(c if c == $code => Some(<$ty>::$variant),)+ _ => None }
        }
    };
}

codes!(Protocol, protocol_code, protocol_from, { Tcp = 0, Udp = 1 });
codes!(Initiator, initiator_code, initiator_from, { Local = 0, Remote = 1, Unknown = 2 });
codes!(FlowEnd, end_code, end_from, {
    Closed = 0, Ongoing = 1, Refused = 2, Reset = 3, Failed = 4,
});
codes!(AttributionSource, source_code, source_from, {
    Capture = 0, Heartbeat = 1, Resolver = 2, Counterpart = 3, CaptureShared = 4,
});
codes!(UnattributedReason, reason_code, reason_from, {
    NotFound = 1, SourceUnavailable = 2, Conflict = 3, Gap = 4,
    Expired = 5, ClockSkew = 6, PluginFailed = 7, Incomplete = 8,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_fill_the_gap_between_pending_and_attributed() {
        let all = [
            UnattributedReason::NotFound,
            UnattributedReason::SourceUnavailable,
            UnattributedReason::Conflict,
            UnattributedReason::Gap,
            UnattributedReason::Expired,
            UnattributedReason::ClockSkew,
            UnattributedReason::PluginFailed,
            UnattributedReason::Incomplete,
        ];
        let codes: Vec<u64> = all.iter().map(|r| reason_code(*r).into()).collect();
        assert_eq!(
            codes,
            (SIDE_PENDING + 1..SIDE_ATTRIBUTED).collect::<Vec<_>>()
        );
        for r in all {
            assert_eq!(reason_from(reason_code(r).into()), Some(r));
        }
        assert_eq!(reason_from(0), None);
        assert_eq!(reason_from(9), None);
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for p in [Protocol::Tcp, Protocol::Udp] {
            assert_eq!(protocol_from(protocol_code(p).into()), Some(p));
        }
        assert_eq!(protocol_from(2), None);
        assert_eq!(initiator_from(3), None);
        assert_eq!(end_from(5), None);
        for s in AttributionSource::ALL {
            assert_eq!(source_from(source_code(s).into()), Some(s));
        }
        assert_eq!(source_code(AttributionSource::CaptureShared), 4);
        assert_eq!(source_from(5), None);
        assert_eq!(col::NAMES.len(), col::COUNT);
    }
}
