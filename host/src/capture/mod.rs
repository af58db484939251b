//! Kernel capture: loads the `host-ebpf` programs, reads their flow records
//! from the ring buffer and their drop counters from a per-CPU array.

pub mod btf;
mod decode;
mod offsets;
mod program_stats;
mod system;

use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::RawTracePoint,
};
use flowattr_host_ebpf::{CaptureConfig, Counter, FlowEvent, names};
use tokio::io::unix::AsyncFd;

pub use decode::{DecodeError, WallClock, decode, monotonic_now_ns};
pub use offsets::OffsetError;
pub use system::SystemError;

/// The programs, built by `build.rs` from `host-ebpf`.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowattr-capture"));

/// Sizes and timing of the kernel side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSettings {
    /// Live TCP sockets tracked at once; more are counted as
    /// `socket_map_full` and not reported.
    pub max_sockets: u32,
    /// Ring buffer size in bytes (rounded up to a power of two, at least one
    /// page).
    pub ring_buffer_bytes: u32,
    /// A live connection is reported at most this often (zero: only at close).
    pub report_interval: Duration,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            max_sockets: names::DEFAULT_MAX_SOCKETS,
            ring_buffer_bytes: names::DEFAULT_RING_BYTES,
            report_interval: Duration::from_secs(30),
        }
    }
}

/// Why the capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    System(#[from] SystemError),
    #[error("reading the kernel's BTF: {0}")]
    Btf(#[from] btf::BtfError),
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error("loading the eBPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error(
        "this kernel has no BPF support (bpf() is not implemented), so flowattr agent cannot capture flows"
    )]
    NoBpf,
    #[error(
        "the kernel refused to load eBPF programs ({0}); flowattr agent needs root with BPF allowed (check kernel.unprivileged_bpf_disabled, lockdown and seccomp)"
    )]
    BpfDenied(std::io::Error),
    #[error("attaching eBPF program {name}: {source}")]
    Attach {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("the eBPF object has no map or program {0} of the expected type")]
    Missing(&'static str),
    #[error("watching the ring buffer: {0}")]
    Io(#[from] std::io::Error),
}

/// Kernel counters summed over CPUs, indexed like [`Counter::ALL`].
pub type KernelCounters = [u64; Counter::COUNT as usize];

/// Reads the programs' per-CPU counters and the kernel's per-program skip
/// counts.
pub struct CounterReader {
    map: PerCpuArray<MapData, u64>,
    /// Duplicates of the programs' fds (the programs stay loaded while the
    /// capture runs).
    programs: Vec<(&'static str, std::os::fd::OwnedFd)>,
}

impl CounterReader {
    /// Current totals; a counter that cannot be read stays 0.
    pub fn read(&self) -> KernelCounters {
        let mut totals = [0; Counter::COUNT as usize];
        for counter in Counter::ALL {
            if let Ok(values) = self.map.get(&(counter as u32), 0) {
                totals[counter as usize] = values.iter().sum();
            }
        }
        totals
    }

    /// Per program, the runs the kernel skipped (see
    /// [`program_stats::recursion_misses`]).
    pub fn skipped_runs(&self) -> Vec<(&'static str, u64)> {
        use std::os::fd::AsFd as _;
        self.programs
            .iter()
            .map(|(name, fd)| {
                (
                    *name,
                    program_stats::recursion_misses(fd.as_fd()).unwrap_or(0),
                )
            })
            .collect()
    }
}

/// The loaded and attached programs. Dropping it detaches them.
pub struct Capture {
    ring: AsyncFd<RingBuf<MapData>>,
    counters: Option<CounterReader>,
    /// Ring buffer entries too short to be a record (never expected).
    malformed: u64,
    _ebpf: Ebpf,
}

impl Capture {
    /// Checks the machine, resolves kernel offsets, loads and attaches the
    /// programs. Must run inside a tokio runtime.
    pub fn start(settings: CaptureSettings) -> Result<Capture, CaptureError> {
        system::prepare()?;
        let offsets = offsets::resolve(&btf::Btf::from_vmlinux()?)?;
        let config = CaptureConfig {
            report_interval_ns: settings.report_interval.as_nanos().min(u64::MAX as u128) as u64,
            offsets,
        };
        let ring_bytes = settings.ring_buffer_bytes.max(4096).next_power_of_two();
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &config, true)
            .map_max_entries(names::SOCKETS, settings.max_sockets.max(1))
            .map_max_entries(names::FLOWS, ring_bytes)
            .load(PROGRAMS)
            .map_err(explain_load_error)?;

        let attach_err = |name| move |source| CaptureError::Attach { name, source };
        for name in names::PROGRAMS {
            let hook: &mut RawTracePoint = program(&mut ebpf, name)?;
            hook.load().map_err(attach_err(name))?;
            hook.attach(name).map_err(attach_err(name))?;
        }

        let ring = ebpf
            .take_map(names::FLOWS)
            .and_then(|m| RingBuf::try_from(m).ok())
            .ok_or(CaptureError::Missing(names::FLOWS))?;
        let counters = ebpf
            .take_map(names::COUNTERS)
            .and_then(|m| PerCpuArray::try_from(m).ok())
            .ok_or(CaptureError::Missing(names::COUNTERS))?;
        let mut programs = Vec::new();
        for name in names::PROGRAMS {
            let fd = ebpf
                .program(name)
                .and_then(|p| p.fd().ok())
                .ok_or(CaptureError::Missing(name))?;
            programs.push((name, std::os::fd::AsFd::as_fd(fd).try_clone_to_owned()?));
        }
        // SAFETY: the ring buffer owns its map fd and moves into the AsyncFd,
        // so the fd stays open and the same for the AsyncFd's whole life.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Capture {
            ring,
            counters: Some(CounterReader {
                map: counters,
                programs,
            }),
            malformed: 0,
            _ebpf: ebpf,
        })
    }

    /// The counter reader, handed to whoever exports metrics (once).
    pub fn take_counters(&mut self) -> Option<CounterReader> {
        self.counters.take()
    }

    /// Waits up to `within` for records, then appends every one available
    /// to `out`. Returns when (kernel monotonic ns) its last pass over the
    /// ring began: every record the kernel had written by then is in `out`
    /// or was read before, except behind a record still being written then
    /// (the ring is read in order; a BPF program writes one in microseconds).
    pub async fn read(
        &mut self,
        out: &mut Vec<FlowEvent>,
        within: Duration,
    ) -> std::io::Result<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let Ok(ready) = tokio::time::timeout_at(deadline, self.ring.readable_mut()).await
            else {
                // Nothing woke us: one pass tells how far the ring is read.
                return Ok(self.read_now(out));
            };
            let mut guard = ready?;
            let before = out.len();
            self.malformed += drain(guard.get_inner_mut(), out);
            guard.clear_ready();
            // The kernel wakes the reader only when it had caught up. A record
            // submitted between the last read and `clear_ready` woke us before
            // we cleared, so look once more, or it would wait for the next
            // wakeup (which might not come while the buffer is not empty).
            let from = monotonic_now_ns();
            self.malformed += drain(guard.get_inner_mut(), out);
            if out.len() > before {
                return Ok(from);
            }
        }
    }

    /// Appends the records available now to `out`, without waiting (the
    /// last read at shutdown, or a read that found nothing to wait for).
    /// Returns when the pass began, as [`Capture::read`] does.
    pub fn read_now(&mut self, out: &mut Vec<FlowEvent>) -> u64 {
        let from = monotonic_now_ns();
        self.malformed += drain(self.ring.get_mut(), out);
        from
    }

    /// Ring buffer entries dropped for being shorter than a record.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

/// A load failure caused by the kernel itself (no BPF, not allowed) becomes
/// one sentence an operator can act on; others keep aya's detail.
fn explain_load_error(error: aya::EbpfError) -> CaptureError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.raw_os_error() {
                Some(libc::ENOSYS) => return CaptureError::NoBpf,
                Some(libc::EPERM | libc::EACCES) => {
                    return CaptureError::BpfDenied(std::io::Error::from_raw_os_error(
                        io.raw_os_error().unwrap_or_default(),
                    ));
                }
                _ => {}
            }
        }
        source = e.source();
    }
    CaptureError::Load(error)
}

/// Appends every record in the ring to `out`; returns how many entries were
/// too short to be a record.
fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<FlowEvent>) -> u64 {
    let mut malformed = 0;
    while let Some(item) = ring.next() {
        if item.len() < size_of::<FlowEvent>() {
            malformed += 1;
            continue;
        }
        // SAFETY: the kernel wrote a FlowEvent (plain integers) here and the
        // entry is long enough; read_unaligned copes with alignment.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
    }
    malformed
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(CaptureError::Missing(name))
}
