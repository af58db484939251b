//! The capture agent's kernel/user ABI: the `#[repr(C)]` types that the eBPF
//! programs (`src/main.rs`, target `bpfel-unknown-none`) write and the agent
//! (`host`) reads. Defined once here, `no_std`, used by both sides.
//!
//! The programs follow every TCP socket through the `inet_sock_set_state`
//! raw tracepoint and emit one [`FlowEvent`] when it closes, plus an interval
//! record (`end == End::Ongoing`) from the `sock_send_length` and
//! `sock_recv_length` raw tracepoints when a live connection has not been
//! reported for `report_interval_ns`. `tcp_destroy_sock` is the backstop: a
//! connected socket whose close (or whole life) the kernel skipped — it does
//! not run a program that is already running on that CPU, and a task can be
//! preempted inside one — gets its final record when it is destroyed. Byte and
//! segment counts in a record are what happened since the socket's previous
//! record, so the records of one connection sum to its totals.

#![no_std]

/// Byte offsets of the kernel struct fields the programs read. Rust eBPF has
/// no CO-RE relocations, so the agent resolves these from the running
/// kernel's BTF and sets them before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `tcp_sock.bytes_received` (u64).
    pub tcp_bytes_received: u32,
    /// `tcp_sock.bytes_acked` (u64): bytes sent and acknowledged.
    pub tcp_bytes_acked: u32,
    /// `tcp_sock.segs_in` (u32).
    pub tcp_segs_in: u32,
    /// `tcp_sock.segs_out` (u32).
    pub tcp_segs_out: u32,
    /// `tcp_sock.total_retrans` (u32).
    pub tcp_total_retrans: u32,
    /// `tcp_sock.srtt_us` (u32, microseconds << 3).
    pub tcp_srtt_us: u32,
    /// `sock.sk_err` (int): why a connection ended.
    pub sock_err: u32,
    /// `sock.__sk_common.skc_net` (pointer to `struct net`).
    pub sock_net: u32,
    /// `net.ns.inum` (u32): the network namespace's inode number.
    pub net_ns_inum: u32,
    /// `sock.__sk_common.skc_flags` (unsigned long): bit `SOCK_DONE` says the
    /// peer's FIN arrived.
    pub sock_flags: u32,
    /// `sock.sk_protocol` (u16).
    pub sock_protocol: u32,
    /// `sock.__sk_common.skc_family` (u16).
    pub skc_family: u32,
    /// `inet_sock.inet_sport` (u16, the local port, big-endian). Not
    /// `skc_num`: the kernel clears that before the final state change.
    pub inet_sport: u32,
    /// `sock.__sk_common.skc_dport` (u16, the remote port, big-endian).
    pub skc_dport: u32,
    /// `inet_sock.inet_saddr` (IPv4, big-endian).
    pub inet_saddr: u32,
    /// `sock.__sk_common.skc_daddr` (IPv4, big-endian).
    pub skc_daddr: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr` (16 bytes).
    pub skc_v6_rcv_saddr: u32,
    /// `sock.__sk_common.skc_v6_daddr` (16 bytes).
    pub skc_v6_daddr: u32,
}

/// The programs' settings, written into their `CONFIG` global at load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// A live connection is reported at most this often; 0 turns interval
    /// records off.
    pub report_interval_ns: u64,
    pub offsets: KernelOffsets,
}

/// Who opened a connection.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// The start was not seen (the socket predates the agent).
    Unknown = 0,
    /// The local socket called connect (`CLOSE -> SYN_SENT`).
    Local = 1,
    /// The local socket was accepted (`-> SYN_RECV`).
    Remote = 2,
}

/// How a record's connection ended, or that it is still open.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Closed = 0,
    /// An interval record of a live connection.
    Ongoing = 1,
    /// The peer answered the SYN with a reset.
    Refused = 2,
    /// Reset after it was established (by either side).
    Reset = 3,
    /// The handshake failed another way (timeout, unreachable).
    Failed = 4,
}

/// [`FlowEvent::flags`] bit: the socket was first seen after it started.
pub const FLAG_START_UNSEEN: u8 = 1;

/// One flow record as the kernel emits it through the `FLOWS` ring buffer.
/// Times are `CLOCK_MONOTONIC` nanoseconds; the agent converts them to wall
/// clock. IPv4 addresses use the first 4 bytes of the address arrays.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub start_ns: u64,
    pub end_ns: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub cgroup_id: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub retransmits: u32,
    pub srtt_us: u32,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// Thread-group id of the process that opened or first used the socket;
    /// 0 when no process context was seen.
    pub pid: u32,
    pub local_port: u16,
    pub remote_port: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// An [`Initiator`] value.
    pub initiator: u8,
    /// An [`End`] value.
    pub end: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
}

/// What was already reported for a socket, so the next record carries the
/// difference. Byte counts are payload only: the kernel's `bytes_acked` and
/// `bytes_received` also count the SYN and FIN sequence numbers, which the
/// programs take out (a connecting socket starts at `bytes_sent = 1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub retransmits: u32,
    pub reserved: u32,
    /// When the socket's last record (or its start) was.
    pub at_ns: u64,
}

/// Per-socket state in the `SOCKETS` map, keyed by the `struct sock` address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketState {
    /// The record to emit, with the counters still to fill in.
    pub template: FlowEvent,
    pub reported: Reported,
    /// The socket's TCP state after its last transition.
    pub tcp_state: u32,
    /// 1 once the final record is out: the entry stays until the socket is
    /// destroyed, so `tcp_destroy_sock` can tell a socket it reported from
    /// one it never saw.
    pub closed: u32,
}

/// Indexes of the per-CPU `COUNTERS` array. Every event the programs see or
/// drop is counted by reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// TCP state changes seen by the tracepoint.
    StateChanges = 0,
    /// Records emitted at close or failure.
    FinalRecords = 1,
    /// Interval records emitted for live connections.
    IntervalRecords = 2,
    /// Records lost because the ring buffer was full.
    RingBufferFull = 3,
    /// Sockets not tracked because the socket map was full.
    SocketMapFull = 4,
    /// Sockets first seen after their start (opened before the agent).
    StartUnseen = 5,
    /// Kernel memory reads that failed (the record is still emitted, with
    /// the field zero).
    ReadFailed = 6,
    /// Final records emitted when the socket was destroyed, because the
    /// kernel skipped our program at its close or for its whole life (see
    /// `tcp_destroy_sock`).
    CloseRecovered = 7,
}

impl Counter {
    /// Number of counters (the `COUNTERS` array's length).
    pub const COUNT: u32 = 8;
    /// All counters, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::StateChanges,
        Counter::FinalRecords,
        Counter::IntervalRecords,
        Counter::RingBufferFull,
        Counter::SocketMapFull,
        Counter::StartUnseen,
        Counter::ReadFailed,
        Counter::CloseRecovered,
    ];

    /// Stable snake_case name, used in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::StateChanges => "state_changes",
            Counter::FinalRecords => "final_records",
            Counter::IntervalRecords => "interval_records",
            Counter::RingBufferFull => "ring_buffer_full",
            Counter::SocketMapFull => "socket_map_full",
            Counter::StartUnseen => "start_unseen",
            Counter::ReadFailed => "read_failed",
            Counter::CloseRecovered => "close_recovered",
        }
    }
}

/// Names and default sizes of the programs' maps and programs.
pub mod names {
    pub const CONFIG: &str = "CONFIG";
    pub const SOCKETS: &str = "SOCKETS";
    pub const FLOWS: &str = "FLOWS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const STATE_PROGRAM: &str = "inet_sock_set_state";
    pub const SEND_PROGRAM: &str = "sock_send_length";
    pub const RECV_PROGRAM: &str = "sock_recv_length";
    pub const DESTROY_PROGRAM: &str = "tcp_destroy_sock";
    /// Every program, each attached to the raw tracepoint of its name.
    pub const PROGRAMS: [&str; 4] = [STATE_PROGRAM, SEND_PROGRAM, RECV_PROGRAM, DESTROY_PROGRAM];
    /// Default capacity of `SOCKETS` (live TCP sockets tracked at once).
    pub const DEFAULT_MAX_SOCKETS: u32 = 65_536;
    /// Default size of the `FLOWS` ring buffer in bytes (a power of two).
    pub const DEFAULT_RING_BYTES: u32 = 8 << 20;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all four are repr(C), Copy, made of integers and byte arrays,
    // and laid out without implicit padding (checked by the tests below).
    unsafe impl aya::Pod for super::CaptureConfig {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::SocketState {}
    unsafe impl aya::Pod for super::Reported {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn shared_types_have_no_implicit_padding() {
        assert_eq!(size_of::<KernelOffsets>(), 18 * 4);
        assert_eq!(size_of::<CaptureConfig>(), 8 + 72);
        assert_eq!(size_of::<FlowEvent>(), 32 + 5 * 8 + 6 * 4 + 2 * 2 + 4);
        assert_eq!(size_of::<Reported>(), 2 * 8 + 4 * 4 + 8);
        assert_eq!(
            size_of::<SocketState>(),
            size_of::<FlowEvent>() + size_of::<Reported>() + 8
        );
    }

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32, "{}", c.name());
        }
    }
}
