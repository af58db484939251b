//! The capture agent's eBPF programs. Built with
//! `--features programs --target bpfel-unknown-none` by `host/build.rs`.
//!
//! * `inet_sock_set_state` (tracepoint) starts tracking a socket when it
//!   begins a connect or is created by an accept, and emits its final record
//!   when it reaches `TCP_CLOSE`;
//! * `sock_send_length` / `sock_recv_length` (tracepoints, after every send
//!   and receive call) record the process that uses an accepted socket, and
//!   emit an interval record for a live connection that has not been
//!   reported for `CONFIG.report_interval_ns`.

#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use flowattr_host_ebpf::{
    CaptureConfig, Counter, End, FLAG_START_UNSEEN, FlowEvent, Initiator, KernelOffsets, Reported,
    SocketState, names, socket_io, tracepoint as tp,
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

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = on_state_change(&ctx);
    0
}

#[inline(always)]
fn on_state_change(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets of the tracepoint's record format.
    let protocol: u16 = unsafe { ctx.read_at(tp::PROTOCOL)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    count(Counter::StateChanges);
    let sk: u64 = unsafe { ctx.read_at(tp::SKADDR)? };
    let old: i32 = unsafe { ctx.read_at(tp::OLDSTATE)? };
    let new: i32 = unsafe { ctx.read_at(tp::NEWSTATE)? };
    let now = unsafe { bpf_ktime_get_ns() };
    match new {
        TCP_SYN_SENT => start(ctx, sk, Initiator::Local, now),
        TCP_SYN_RECV => start(ctx, sk, Initiator::Remote, now),
        TCP_CLOSE if old != TCP_LISTEN => finish(ctx, sk, old, now),
        TCP_LISTEN | TCP_CLOSE => Ok(()),
        _ => {
            if SOCKETS.get_ptr(sk).is_none() {
                track_unseen(ctx, sk, now)?;
            }
            if let Some(state) = SOCKETS.get_ptr_mut(sk) {
                // SAFETY: a live map value of this socket.
                let state = unsafe { &mut *state };
                state.tcp_state = new as u32;
                endpoints(ctx, &mut state.template)?;
            }
            Ok(())
        }
    }
}

/// The record skeleton for a socket, from the tracepoint's addresses.
#[inline(always)]
fn template(
    ctx: &TracePointContext,
    sk: u64,
    initiator: Initiator,
    now: u64,
) -> Result<FlowEvent, i64> {
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
    endpoints(ctx, &mut event)?;
    Ok(event)
}

/// Copies the tracepoint's addresses and ports into `event`. Called on every
/// transition: a connecting socket gets its local port after `SYN_SENT`.
#[inline(always)]
fn endpoints(ctx: &TracePointContext, event: &mut FlowEvent) -> Result<(), i64> {
    event.local_port = unsafe { ctx.read_at(tp::SPORT)? };
    event.remote_port = unsafe { ctx.read_at(tp::DPORT)? };
    let family: u16 = unsafe { ctx.read_at(tp::FAMILY)? };
    match family {
        AF_INET => {
            let local: [u8; 4] = unsafe { ctx.read_at(tp::SADDR)? };
            let remote: [u8; 4] = unsafe { ctx.read_at(tp::DADDR)? };
            event.local_addr[..4].copy_from_slice(&local);
            event.remote_addr[..4].copy_from_slice(&remote);
            event.ip_version = 4;
        }
        AF_INET6 => {
            event.local_addr = unsafe { ctx.read_at(tp::SADDR_V6)? };
            event.remote_addr = unsafe { ctx.read_at(tp::DADDR_V6)? };
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
        reserved: 0,
    };
    if SOCKETS.insert(sk, state, 0).is_err() {
        count(Counter::SocketMapFull);
    }
}

#[inline(always)]
fn start(ctx: &TracePointContext, sk: u64, initiator: Initiator, now: u64) -> Result<(), i64> {
    let mut event = template(ctx, sk, initiator, now)?;
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
fn track_unseen(ctx: &TracePointContext, sk: u64, now: u64) -> Result<(), i64> {
    let mut event = template(ctx, sk, Initiator::Unknown, now)?;
    event.flags |= FLAG_START_UNSEEN;
    count(Counter::StartUnseen);
    let tcp_state: i32 = unsafe { ctx.read_at(tp::OLDSTATE)? };
    track(sk, event, tcp_state, now);
    Ok(())
}

#[inline(always)]
fn finish(ctx: &TracePointContext, sk: u64, old: i32, now: u64) -> Result<(), i64> {
    if SOCKETS.get_ptr(sk).is_none() {
        track_unseen(ctx, sk, now)?;
    }
    let Some(state) = SOCKETS.get_ptr_mut(sk) else {
        return Ok(());
    };
    // SAFETY: the map value stays valid until removed below.
    let state = unsafe { &mut *state };
    endpoints(ctx, &mut state.template)?;
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
    let _ = SOCKETS.remove(sk);
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

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    let _ = on_socket_io(&ctx);
    0
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    let _ = on_socket_io(&ctx);
    0
}

/// A process sent or received on a socket: for a tracked one, remember who
/// (accepted sockets are created in softirq context, where the process is
/// unknown), and report the connection if it is due.
#[inline(always)]
fn on_socket_io(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets of the tracepoints' record format.
    let protocol: u16 = unsafe { ctx.read_at(socket_io::PROTOCOL)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let sk: u64 = unsafe { ctx.read_at(socket_io::SK)? };
    let Some(state) = SOCKETS.get_ptr_mut(sk) else {
        return Ok(());
    };
    // SAFETY: a live map value of this socket.
    let state = unsafe { &mut *state };
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
