//! The capture agent's eBPF programs. Built with
//! `--features programs --target bpfel-unknown-none` by `host/build.rs`.
//!
//! * `inet_sock_set_state` starts tracking a socket when it begins a connect
//!   or is created by an accept, and emits its final record when it reaches
//!   `TCP_CLOSE`;
//! * `sock_send_length` / `sock_recv_length` (after every send and receive
//!   call) record the process that uses an accepted socket, and emit an
//!   interval record for a live connection that has not been reported for
//!   `CONFIG.report_interval_ns`.
//!
//! All three are raw tracepoints: the kernel guards each raw tracepoint
//! program against nesting on its own, whereas classic tracepoint programs
//! share one per-CPU guard, so one of ours running in process context made
//! the kernel skip another hit in softirq (a lost close).

#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, raw_tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use flowattr_host_ebpf::{
    CaptureConfig, Counter, End, FLAG_START_UNSEEN, FlowEvent, Initiator, KernelOffsets, Reported,
    SocketState, names,
};

const IPPROTO_TCP: u16 = 6;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_FIN_WAIT2: i32 = 5;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_LAST_ACK: i32 = 9;
const TCP_CLOSING: i32 = 11;

/// `sk_flags` bit set when the peer's FIN arrives (`enum sock_flags`).
const SOCK_DONE: u64 = 1 << 1;
const TCP_LISTEN: i32 = 10;

const ECONNRESET: i32 = 104;
const ECONNREFUSED: i32 = 111;
const EPIPE: i32 = 32;

/// Set by the agent before loading (offsets from the kernel's BTF).
#[unsafe(no_mangle)]
static CONFIG: CaptureConfig = CaptureConfig {
    report_interval_ns: 0,
    offsets: KernelOffsets {
        tcp_bytes_received: 0,
        tcp_bytes_acked: 0,
        tcp_segs_in: 0,
        tcp_segs_out: 0,
        tcp_total_retrans: 0,
        tcp_srtt_us: 0,
        sock_err: 0,
        sock_net: 0,
        net_ns_inum: 0,
        sock_flags: 0,
        sock_protocol: 0,
        skc_family: 0,
        inet_sport: 0,
        skc_dport: 0,
        inet_saddr: 0,
        skc_daddr: 0,
        skc_v6_rcv_saddr: 0,
        skc_v6_daddr: 0,
    },
};

#[map]
static SOCKETS: HashMap<u64, SocketState> =
    HashMap::with_max_entries(names::DEFAULT_MAX_SOCKETS, 0);

#[map]
static FLOWS: RingBuf = RingBuf::with_byte_size(names::DEFAULT_RING_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[inline(always)]
fn config() -> CaptureConfig {
    // SAFETY: a plain read of a global the loader wrote; volatile so the
    // compiler does not fold the zero initialiser.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *slot += 1 };
    }
}

/// Reads a `T` at `base + offset` in kernel memory; zero (and counted) when
/// the read fails.
#[inline(always)]
fn read_kernel<T: Default>(base: u64, offset: u32) -> T {
    // SAFETY: bpf_probe_read_kernel checks the address.
    match unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) } {
        Ok(v) => v,
        Err(_) => {
            count(Counter::ReadFailed);
            T::default()
        }
    }
}

#[inline(always)]
fn netns_inum(sk: u64, offsets: &KernelOffsets) -> u32 {
    let net: u64 = read_kernel(sk, offsets.sock_net);
    if net == 0 {
        return 0;
    }
    read_kernel(net, offsets.net_ns_inum)
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> u32 {
    let _ = on_state_change(&ctx);
    0
}

#[inline(always)]
fn on_state_change(ctx: &RawTracePointContext) -> Result<(), i64> {
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    let sk: u64 = ctx.arg(0);
    let protocol: u16 = read_kernel(sk, config().offsets.sock_protocol);
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    count(Counter::StateChanges);
    let old = ctx.arg::<u64>(1) as i32;
    let new = ctx.arg::<u64>(2) as i32;
    let now = unsafe { bpf_ktime_get_ns() };
    match new {
        TCP_SYN_SENT => start(sk, Initiator::Local, now),
        TCP_SYN_RECV => start(sk, Initiator::Remote, now),
        TCP_CLOSE if old != TCP_LISTEN => finish(sk, old, now),
        TCP_LISTEN | TCP_CLOSE => Ok(()),
        _ => {
            // No entry, or one left closed by an earlier socket at this
            // address whose destruction was skipped: a live socket whose
            // start we missed.
            // SAFETY: reading a live map value.
            let stale = SOCKETS
                .get_ptr(sk)
                .is_none_or(|s| unsafe { (*s).closed } != 0);
            if stale {
                track_unseen(sk, old, now)?;
            }
            if let Some(state) = SOCKETS.get_ptr_mut(sk) {
                // SAFETY: a live map value of this socket.
                let state = unsafe { &mut *state };
                state.tcp_state = new as u32;
                endpoints(sk, &mut state.template)?;
            }
            Ok(())
        }
    }
}

/// The record skeleton for a socket.
#[inline(always)]
fn template(sk: u64, initiator: Initiator, now: u64) -> Result<FlowEvent, i64> {
    let mut event = FlowEvent {
        local_addr: [0; 16],
        remote_addr: [0; 16],
        start_ns: now,
        end_ns: 0,
        bytes_sent: 0,
        bytes_received: 0,
        cgroup_id: 0,
        segs_out: 0,
        segs_in: 0,
        retransmits: 0,
        srtt_us: 0,
        netns: netns_inum(sk, &config().offsets),
        pid: 0,
        local_port: 0,
        remote_port: 0,
        ip_version: 4,
        initiator: initiator as u8,
        end: End::Closed as u8,
        flags: 0,
    };
    endpoints(sk, &mut event)?;
    Ok(event)
}

/// Copies the socket's addresses and ports into `event`. Called on every
/// transition: a connecting socket gets its local port after `SYN_SENT`.
#[inline(always)]
fn endpoints(sk: u64, event: &mut FlowEvent) -> Result<(), i64> {
    let o = config().offsets;
    event.local_port = u16::from_be(read_kernel(sk, o.inet_sport));
    event.remote_port = u16::from_be(read_kernel(sk, o.skc_dport));
    let family: u16 = read_kernel(sk, o.skc_family);
    match family {
        AF_INET => {
            let local: [u8; 4] = read_kernel(sk, o.inet_saddr);
            let remote: [u8; 4] = read_kernel(sk, o.skc_daddr);
            event.local_addr[..4].copy_from_slice(&local);
            event.remote_addr[..4].copy_from_slice(&remote);
            event.ip_version = 4;
        }
        AF_INET6 => {
            event.local_addr = read_kernel(sk, o.skc_v6_rcv_saddr);
            event.remote_addr = read_kernel(sk, o.skc_v6_daddr);
            event.ip_version = 6;
        }
        _ => return Err(0),
    }
    Ok(())
}

#[inline(always)]
fn track(sk: u64, template: FlowEvent, tcp_state: i32, now: u64) {
    let state = SocketState {
        template,
        reported: Reported {
            // The SYN this socket sends will be acknowledged as one byte.
            bytes_sent: (template.initiator == Initiator::Local as u8) as u64,
            at_ns: now,
            ..Reported::default()
        },
        tcp_state: tcp_state as u32,
        closed: 0,
    };
    if SOCKETS.insert(sk, state, 0).is_err() {
        count(Counter::SocketMapFull);
    }
}

#[inline(always)]
fn start(sk: u64, initiator: Initiator, now: u64) -> Result<(), i64> {
    let mut event = template(sk, initiator, now)?;
    if initiator == Initiator::Local {
        // connect() runs in the calling process.
        event.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        event.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    }
    let tcp_state = match initiator {
        Initiator::Local => TCP_SYN_SENT,
        _ => TCP_SYN_RECV,
    };
    track(sk, event, tcp_state, now);
    Ok(())
}

#[inline(always)]
fn track_unseen(sk: u64, tcp_state: i32, now: u64) -> Result<(), i64> {
    let mut event = template(sk, Initiator::Unknown, now)?;
    event.flags |= FLAG_START_UNSEEN;
    count(Counter::StartUnseen);
    track(sk, event, tcp_state, now);
    Ok(())
}

#[inline(always)]
fn finish(sk: u64, old: i32, now: u64) -> Result<(), i64> {
    if SOCKETS.get_ptr(sk).is_none() {
        track_unseen(sk, old, now)?;
    }
    let Some(state) = SOCKETS.get_ptr_mut(sk) else {
        return Ok(());
    };
    // SAFETY: a live map value of this socket.
    let state = unsafe { &mut *state };
    if state.closed != 0 {
        return Ok(());
    }
    endpoints(sk, &mut state.template)?;
    let err: i32 = read_kernel(sk, config().offsets.sock_err);
    let end = match old {
        TCP_SYN_SENT if err == ECONNREFUSED => End::Refused,
        TCP_SYN_SENT | TCP_SYN_RECV => End::Failed,
        _ if err == ECONNRESET || err == EPIPE => End::Reset,
        TCP_ESTABLISHED | TCP_CLOSE_WAIT => End::Reset,
        _ => End::Closed,
    };
    // Our FIN was acknowledged: in FIN_WAIT2 it already was; leaving
    // LAST_ACK or CLOSING without an error means its acknowledgement came.
    let fin_acked =
        old == TCP_FIN_WAIT2 || ((old == TCP_LAST_ACK || old == TCP_CLOSING) && err == 0);
    emit(state, sk, end, fin_acked, now);
    state.closed = 1;
    state.tcp_state = TCP_CLOSE as u32;
    Ok(())
}

/// Emits `state`'s record with the counters since its last one. Byte counts
/// leave out the SYN and FIN sequence numbers: `fin_acked` says our FIN is in
/// `bytes_acked`, `SOCK_DONE` that the peer's is in `bytes_received`.
#[inline(always)]
fn emit(state: &mut SocketState, sk: u64, end: End, fin_acked: bool, now: u64) {
    let o = config().offsets;
    let acked: u64 = read_kernel(sk, o.tcp_bytes_acked);
    let bytes_sent = acked.saturating_sub(fin_acked as u64);
    let flags: u64 = read_kernel(sk, o.sock_flags);
    let received: u64 = read_kernel(sk, o.tcp_bytes_received);
    let bytes_received = received.saturating_sub((flags & SOCK_DONE != 0) as u64);
    let segs_out: u32 = read_kernel(sk, o.tcp_segs_out);
    let segs_in: u32 = read_kernel(sk, o.tcp_segs_in);
    let retransmits: u32 = read_kernel(sk, o.tcp_total_retrans);
    let srtt: u32 = read_kernel(sk, o.tcp_srtt_us);

    let Some(mut entry) = FLOWS.reserve::<FlowEvent>(0) else {
        count(Counter::RingBufferFull);
        return;
    };
    let r = &state.reported;
    let mut event = state.template;
    event.end_ns = now;
    event.end = end as u8;
    event.bytes_sent = bytes_sent.saturating_sub(r.bytes_sent);
    event.bytes_received = bytes_received.saturating_sub(r.bytes_received);
    event.segs_out = segs_out.saturating_sub(r.segs_out);
    event.segs_in = segs_in.saturating_sub(r.segs_in);
    event.retransmits = retransmits.saturating_sub(r.retransmits);
    event.srtt_us = srtt >> 3;
    entry.write(event);
    entry.submit(0);
    count(if end == End::Ongoing {
        Counter::IntervalRecords
    } else {
        Counter::FinalRecords
    });
    state.reported = Reported {
        bytes_sent,
        bytes_received,
        segs_out,
        segs_in,
        retransmits,
        reserved: 0,
        at_ns: now,
    };
}

/// The socket is being destroyed: forget it. Normally its record went out at
/// `TCP_CLOSE`. If not, the kernel skipped that run (it does not run a
/// program already running on that CPU, and a task can be preempted inside
/// one), so emit it now: from the last state seen if the socket is tracked,
/// or as a socket first seen now if its whole life was skipped. Sockets that
/// never had a peer (listeners, never connected) have nothing to report.
#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: RawTracePointContext) -> u32 {
    // TP_PROTO(struct sock *sk)
    let sk: u64 = ctx.arg(0);
    let now = unsafe { bpf_ktime_get_ns() };
    match SOCKETS.get_ptr(sk) {
        // SAFETY: a live map value of this socket.
        Some(state) if unsafe { (*state).closed } != 0 => {}
        Some(state) => {
            count(Counter::CloseRecovered);
            let _ = finish(sk, unsafe { (*state).tcp_state } as i32, now);
        }
        None => {
            let remote_port: u16 = read_kernel(sk, config().offsets.skc_dport);
            if remote_port != 0 {
                count(Counter::CloseRecovered);
                let _ = finish(sk, TCP_CLOSE, now);
            }
        }
    }
    let _ = SOCKETS.remove(sk);
    0
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> u32 {
    let _ = on_socket_io(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> u32 {
    let _ = on_socket_io(&ctx);
    0
}

/// A process sent or received on a socket: for a tracked one, remember who
/// (accepted sockets are created in softirq context, where the process is
/// unknown), and report the connection if it is due.
#[inline(always)]
fn on_socket_io(ctx: &RawTracePointContext) -> Result<(), i64> {
    // TP_PROTO(struct sock *sk, int ret, int flags); only tracked sockets
    // (TCP) are in the map, so no protocol check is needed.
    let sk: u64 = ctx.arg(0);
    let Some(state) = SOCKETS.get_ptr_mut(sk) else {
        return Ok(());
    };
    // SAFETY: a live map value of this socket.
    let state = unsafe { &mut *state };
    if state.closed != 0 {
        return Ok(());
    }
    if state.template.pid == 0 {
        state.template.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        state.template.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    }
    let interval = config().report_interval_ns;
    if interval == 0 {
        return Ok(());
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if now.saturating_sub(state.reported.at_ns) >= interval {
        let fin_acked = state.tcp_state == TCP_FIN_WAIT2 as u32;
        emit(state, sk, End::Ongoing, fin_acked, now);
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
