//! Kernel records to flow records: a pure conversion.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use flowattr_host_ebpf::{End, FlowEvent, Initiator as KernelInitiator};
use flowattr_model::{Flow, FlowEnd, Initiator, Protocol};

/// Converts kernel `CLOCK_MONOTONIC` times to Unix-epoch times. Kept fixed
/// between clock steps, so every record of one connection carries the same
/// start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// Realtime minus monotonic, in nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    /// The offset between the two clocks now.
    pub fn now() -> Self {
        Self::from_offset(clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC))
    }

    /// `self`, or the current offset when the wall clock was stepped by more
    /// than a millisecond since (NTP adjustments are followed, jitter is not).
    pub fn refreshed(self) -> Self {
        let now = Self::now();
        if now.offset_ns.abs_diff(self.offset_ns) > 1_000_000 {
            now
        } else {
            self
        }
    }

    /// A fixed offset (tests).
    pub const fn from_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// The Unix-epoch time of a monotonic timestamp.
    pub fn to_unix_ns(self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.offset_ns).clamp(0, u64::MAX as i128) as u64
    }
}

/// The kernel's `CLOCK_MONOTONIC` now (the clock its records use).
pub fn monotonic_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Why a kernel record could not be turned into a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record has IP version {0}")]
    IpVersion(u8),
    #[error("record has end kind {0}")]
    End(u8),
}

/// The flow a kernel record describes. IPv4-mapped IPv6 addresses (IPv4 on a
/// dual-stack socket) become IPv4.
pub fn decode(event: &FlowEvent, clock: WallClock) -> Result<Flow, DecodeError> {
    let address = |bytes: &[u8; 16]| -> Result<IpAddr, DecodeError> {
        match event.ip_version {
            4 => Ok(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            6 => Ok(Ipv6Addr::from(*bytes).to_canonical()),
            v => Err(DecodeError::IpVersion(v)),
        }
    };
    let end_state = match event.end {
        e if e == End::Closed as u8 => FlowEnd::Closed,
        e if e == End::Ongoing as u8 => FlowEnd::Ongoing,
        e if e == End::Refused as u8 => FlowEnd::Refused,
        e if e == End::Reset as u8 => FlowEnd::Reset,
        e if e == End::Failed as u8 => FlowEnd::Failed,
        e => return Err(DecodeError::End(e)),
    };
    let initiator = match event.initiator {
        i if i == KernelInitiator::Local as u8 => Initiator::Local,
        i if i == KernelInitiator::Remote as u8 => Initiator::Remote,
        _ => Initiator::Unknown,
    };
    Ok(Flow {
        protocol: Protocol::Tcp,
        local: SocketAddr::new(address(&event.local_addr)?, event.local_port),
        remote: SocketAddr::new(address(&event.remote_addr)?, event.remote_port),
        initiator,
        end_state,
        start_ns: clock.to_unix_ns(event.start_ns),
        end_ns: clock.to_unix_ns(event.end_ns),
        bytes_sent: event.bytes_sent,
        bytes_received: event.bytes_received,
        packets_sent: event.segs_out.into(),
        packets_received: event.segs_in.into(),
        retransmits: event.retransmits,
        srtt_us: event.srtt_us,
        cgroup_id: event.cgroup_id,
        netns_id: event.netns.into(),
        pid: event.pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> FlowEvent {
        FlowEvent {
            local_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            start_ns: 1_000,
            end_ns: 5_000,
            bytes_sent: 100,
            bytes_received: 200,
            cgroup_id: 7,
            segs_out: 3,
            segs_in: 4,
            retransmits: 1,
            srtt_us: 50,
            netns: 4026531840,
            pid: 42,
            local_port: 40000,
            remote_port: 80,
            ip_version: 4,
            initiator: KernelInitiator::Local as u8,
            end: End::Closed as u8,
            flags: 0,
        }
    }

    #[test]
    fn decodes_ipv4_with_wall_clock_times() {
        let flow = decode(&event(), WallClock::from_offset(1_000_000)).unwrap();
        assert_eq!(flow.local, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(flow.remote, "10.0.0.2:80".parse().unwrap());
        assert_eq!((flow.start_ns, flow.end_ns), (1_001_000, 1_005_000));
        assert_eq!(flow.initiator, Initiator::Local);
        assert_eq!(flow.end_state, FlowEnd::Closed);
        assert_eq!((flow.bytes_sent, flow.bytes_received), (100, 200));
        assert_eq!((flow.packets_sent, flow.packets_received), (3, 4));
        assert_eq!(
            (flow.netns_id, flow.pid, flow.cgroup_id),
            (4026531840, 42, 7)
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_becomes_ipv4_and_ipv6_stays() {
        let mut e = event();
        e.ip_version = 6;
        e.local_addr = "::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap().octets();
        e.remote_addr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        let flow = decode(&e, WallClock::from_offset(0)).unwrap();
        assert_eq!(flow.local.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(flow.remote.ip(), "fd00::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn unknown_version_or_end_is_an_error_not_a_guess() {
        let mut e = event();
        e.ip_version = 5;
        assert_eq!(
            decode(&e, WallClock::from_offset(0)),
            Err(DecodeError::IpVersion(5))
        );
        let mut e = event();
        e.end = 9;
        assert_eq!(
            decode(&e, WallClock::from_offset(0)),
            Err(DecodeError::End(9))
        );
    }

    #[test]
    fn wall_clock_offset_is_plausible() {
        let clock = WallClock::now();
        let unix = clock.to_unix_ns(clock_ns(libc::CLOCK_MONOTONIC) as u64);
        let real = clock_ns(libc::CLOCK_REALTIME) as u64;
        assert!(real.abs_diff(unix) < 1_000_000_000, "{unix} vs {real}");
    }
}
