//! Benchmark (a) of the collector issue: the ownership core alone, one
//! thread. Heartbeats and lookups per second against the target of
//! 2,000,000 per core, and bytes per stored range against the target of 64.
//!
//! The table is a fleet: 100,000 addresses (70% IPv4, 30% IPv6) on hosts of
//! 32 addresses, each host an agent allowed only its own prefix, each
//! address with four owners in the last 15 minutes (three earlier container
//! workloads and the current one). Simulated time advances 1 µs per
//! heartbeat (a collector core taking a million heartbeats a second), so an
//! address gets a flow every 0.1 s on average. Of the heartbeats, 90% are
//! fresh flows (started up to 10 s ago) extending the current range, 9.95%
//! late flows from earlier in the current owner's tenure, 0.05% the first
//! flow of a new owner (an address reused every few minutes: a new range).
//! `expire` runs once a simulated second and its cost is included. Lookups
//! ask for a random address at a random flow start 1–11 minutes ago (the
//! hold queue is a minute).
//!
//! Heartbeats are measured one call per flow for random addresses, and in
//! 64-flow batches from one agent (the shape they arrive in: an agent's
//! batch is about its own host's addresses). Lookups are measured one call
//! each and 1,024 a call (`lookup_many`, as the hold queue releases flows),
//! with the workload lent or its `Arc` cloned (as an attributed flow keeps
//! it). The headline, `mixed`, interleaves what a collector core does per
//! agent batch: 64 heartbeats, then 64 lookups for remote sides.
//!
//! Run with `cargo bench -p flowattr-collector --bench ownership`; the
//! summary after criterion's report gives each rate (median of five rounds
//! of a million operations), the heartbeats-plus-lookups rates against the
//! target, the lookup outcomes and the memory per range, with the
//! allocator's own count beside the table's estimate. Under `cargo test`
//! criterion runs each case once on a small fleet and the summary is
//! skipped.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use criterion::{Criterion, Throughput};
use flowattr_collector::ownership::{HeartbeatOutcome, OwnershipConfig, OwnershipTable, Prefix};
use flowattr_model::{TimeRange, UnattributedReason, Workload};

const S: u64 = 1_000_000_000;
const FLEET: usize = 100_000;
const HOST_SIZE: usize = 32;
/// Simulated time per heartbeat: a collector core taking a million
/// heartbeats a second.
const STEP_NS: u64 = 1_000;
/// `expire` runs about once a simulated second.
const EXPIRE_EVERY: u64 = 1 << 20;
const BATCH: u64 = 1_024;
/// Flows in one agent's batch.
const BATCH_FLOWS: u64 = 64;
const TARGET_OPS: f64 = 2_000_000.0;
const TARGET_BYTES: f64 = 64.0;

/// Counts the heap the process holds, in allocator blocks (glibc's 8-byte
/// header, 16-byte rounding, 32-byte minimum), to check the table's own
/// estimate.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

fn block(size: usize) -> usize {
    ((size + 8 + 15) & !15).max(32)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(block(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(block(layout.size()), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(block(new_size), Ordering::Relaxed);
        LIVE.fetch_sub(block(layout.size()), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// xorshift64: deterministic and cheap next to what it measures.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

struct Fleet {
    table: OwnershipTable,
    ips: Vec<IpAddr>,
    /// Agent name per host.
    hosts: Vec<String>,
    /// Per address: the current owner (index into `pool`) and since when.
    owner: Vec<usize>,
    since: Vec<u64>,
    pool: Vec<Arc<Workload>>,
    next_owner: usize,
    now: u64,
    heartbeats: u64,
    rng: Rng,
    /// A reusable batch: address index, owner, when seen.
    beats: Vec<(usize, usize, TimeRange)>,
    /// Reusable lookup queries: address, flow start.
    queries: Vec<(IpAddr, u64)>,
}

fn address(i: usize) -> IpAddr {
    // Seven hosts in ten are IPv4 hosts.
    if (i / HOST_SIZE) % 10 < 7 {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | i as u128))
    }
}

fn workload(n: usize) -> Workload {
    let app = format!("app-{:03}", n % 500);
    Workload {
        id: format!("c-{n:08x}"),
        cluster: Some(format!("{app}-prod-v{:03}", n % 7)),
        app: Some(app),
        stack: Some("prod".into()),
        account: Some("123456789012".into()),
        region: Some("us-east-1".into()),
        labels: [("team".to_owned(), format!("team-{}", n % 40))].into(),
    }
}

impl Fleet {
    /// A fleet of `n` addresses with 15 minutes of history: three earlier
    /// owners per address and the current one.
    fn new(n: usize) -> Self {
        let pool: Vec<_> = (0..n).map(|k| Arc::new(workload(k))).collect();
        let ips: Vec<_> = (0..n).map(address).collect();
        let mut table = OwnershipTable::new(OwnershipConfig::default());
        let hosts: Vec<_> = (0..n.div_ceil(HOST_SIZE))
            .map(|h| {
                let name = format!("agent-{h:05}");
                let len = if ips[h * HOST_SIZE].is_ipv4() {
                    27
                } else {
                    123
                };
                table.allow(&name, [Prefix::new(ips[h * HOST_SIZE], len).unwrap()]);
                name
            })
            .collect();
        let t0 = 1_700_000_000 * S;
        let now = t0 + 800 * S;
        let mut fleet = Self {
            table,
            ips,
            hosts,
            owner: vec![0; n],
            since: vec![0; n],
            pool,
            next_owner: 0,
            now,
            heartbeats: 0,
            rng: Rng(0x2545_f491_4f6c_dd1d),
            beats: Vec::new(),
            queries: Vec::new(),
        };
        for i in 0..n {
            for k in 0..4u64 {
                let start = t0 + k * 200 * S + fleet.rng.below(20 * S);
                let end = if k == 3 { now } else { start + 150 * S };
                let owner = fleet.take_owner();
                let outcome = fleet.table.heartbeat(
                    fleet.ips[i],
                    &fleet.pool[owner],
                    TimeRange::new(start, end),
                    &fleet.hosts[i / HOST_SIZE],
                    now,
                );
                assert_eq!(outcome, HeartbeatOutcome::Inserted);
                (fleet.owner[i], fleet.since[i]) = (owner, start);
            }
        }
        fleet
    }

    fn take_owner(&mut self) -> usize {
        self.next_owner = (self.next_owner + 1) % self.pool.len();
        self.next_owner
    }

    /// The next flow of address `i`: its owner and when it was seen.
    fn flow(&mut self, i: usize) -> (usize, TimeRange) {
        self.now += STEP_NS;
        self.heartbeats += 1;
        if self.heartbeats.is_multiple_of(EXPIRE_EVERY) {
            self.table.expire(self.now);
        }
        let roll = self.rng.below(10_000);
        if roll >= 9_995 {
            // The address is reused by a new workload from now on.
            self.owner[i] = self.take_owner();
            self.since[i] = self.now;
        }
        let since = self.since[i];
        let seen = if !(9_000..9_995).contains(&roll) {
            let start = self.now.saturating_sub(self.rng.below(10 * S)).max(since);
            TimeRange::new(start, self.now)
        } else {
            let start = since + self.rng.below(self.now - since);
            TimeRange::new(start, (start + self.rng.below(5 * S)).min(self.now))
        };
        (self.owner[i], seen)
    }

    /// One heartbeat for a random address of the fleet.
    fn heartbeat(&mut self) -> HeartbeatOutcome {
        let i = self.rng.below(self.ips.len() as u64) as usize;
        let (owner, seen) = self.flow(i);
        self.table.heartbeat(
            self.ips[i],
            &self.pool[owner],
            seen,
            &self.hosts[i / HOST_SIZE],
            self.now,
        )
    }

    /// One agent's batch of `BATCH_FLOWS` heartbeats for its host's
    /// addresses.
    fn batch(&mut self) {
        let host = self.rng.below(self.hosts.len() as u64) as usize;
        let first = host * HOST_SIZE;
        let size = HOST_SIZE.min(self.ips.len() - first) as u64;
        let mut beats = std::mem::take(&mut self.beats);
        beats.clear();
        for _ in 0..BATCH_FLOWS {
            let i = first + self.rng.below(size) as usize;
            let (owner, seen) = self.flow(i);
            beats.push((i, owner, seen));
        }
        let (ips, pool) = (&self.ips, &self.pool);
        let counts = self.table.heartbeats(
            &self.hosts[host],
            beats
                .iter()
                .map(|&(i, owner, seen)| (ips[i], &pool[owner], seen)),
            self.now,
        );
        assert_eq!(counts.refused, 0);
        self.beats = beats;
    }

    /// `n` lookups in one call, each answer's workload cloned if `clone`;
    /// returns how many were attributed.
    fn lookup_many(&mut self, n: u64, clone: bool) -> usize {
        let mut queries = std::mem::take(&mut self.queries);
        queries.clear();
        for _ in 0..n {
            let i = self.rng.below(self.ips.len() as u64) as usize;
            let t = self.now - 60 * S - self.rng.below(600 * S);
            queries.push((self.ips[i], t));
        }
        let mut answers = Vec::with_capacity(queries.len());
        self.table.lookup_many(&queries, self.now, &mut answers);
        self.queries = queries;
        let attributed = answers.iter().flatten();
        if clone {
            // As an attributed flow keeps its workload, until it is written.
            let kept: Vec<Arc<Workload>> = attributed.map(|(w, _)| Arc::clone(w)).collect();
            black_box(&kept).len()
        } else {
            black_box(attributed.count())
        }
    }

    /// What a collector core does per agent batch: its heartbeats, and as
    /// many lookups for the remote sides of earlier flows.
    fn mixed(&mut self) {
        self.batch();
        self.lookup_many(BATCH_FLOWS, false);
    }

    fn lookup(&mut self) -> Result<(&Arc<Workload>, TimeRange), UnattributedReason> {
        let i = self.rng.below(self.ips.len() as u64) as usize;
        let t = self.now - 60 * S - self.rng.below(600 * S);
        self.table.lookup(self.ips[i], t, self.now)
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { FLEET } else { 4 * HOST_SIZE };

    let heap_before = LIVE.load(Ordering::Relaxed);
    let mut fleet = Fleet::new(n);
    let heap_fleet = LIVE.load(Ordering::Relaxed) - heap_before;
    let estimate_fleet = fleet.table.memory_bytes() + fleet_bytes(&fleet);

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("ownership");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("heartbeat", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                black_box(fleet.heartbeat());
            }
        })
    });
    group.bench_function("heartbeat_batched", |b| {
        b.iter(|| {
            for _ in 0..BATCH / BATCH_FLOWS {
                fleet.batch();
            }
        })
    });
    group.bench_function("lookup", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let _ = black_box(fleet.lookup());
            }
        })
    });
    group.bench_function("lookup_many", |b| {
        b.iter(|| fleet.lookup_many(BATCH, false))
    });
    group.bench_function("lookup_cloned", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let _ = black_box(fleet.lookup().map(|(w, valid)| (w.clone(), valid)));
            }
        })
    });
    group.bench_function("mixed", |b| {
        b.iter(|| {
            for _ in 0..BATCH / (2 * BATCH_FLOWS) {
                fleet.mixed();
            }
        })
    });
    group.finish();
    criterion.final_summary();

    if full {
        summary(&mut fleet, heap_fleet, estimate_fleet);
    }
}

/// Rates measured directly (median of five rounds), lookup outcomes, memory.
fn summary(fleet: &mut Fleet, counted_at_setup: usize, estimated_at_setup: usize) {
    const ROUND: u64 = 1_000_000;
    let rate = |fleet: &mut Fleet, n: u64, op: fn(&mut Fleet)| {
        let mut rates: Vec<f64> = (0..5)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..n {
                    op(fleet);
                }
                n as f64 / start.elapsed().as_secs_f64()
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[2]
    };
    let heartbeats = rate(fleet, ROUND, |f| {
        black_box(f.heartbeat());
    });
    let batched = rate(fleet, ROUND / BATCH_FLOWS, Fleet::batch) * BATCH_FLOWS as f64;
    let lookups = rate(fleet, ROUND, |f| {
        let _ = black_box(f.lookup());
    });
    let cloned = rate(fleet, ROUND, |f| {
        let _ = black_box(f.lookup().map(|(w, valid)| (w.clone(), valid)));
    });
    let many = rate(fleet, ROUND / BATCH, |f| {
        f.lookup_many(BATCH, false);
    }) * BATCH as f64;
    let many_cloned = rate(fleet, ROUND / BATCH, |f| {
        f.lookup_many(BATCH, true);
    }) * BATCH as f64;
    let mixed = rate(fleet, ROUND / (2 * BATCH_FLOWS), Fleet::mixed) * (2 * BATCH_FLOWS) as f64;
    let mix = |a: f64, b: f64| 2.0 / (1.0 / a + 1.0 / b);

    let mut outcomes = std::collections::BTreeMap::new();
    for _ in 0..ROUND {
        let name = match fleet.lookup() {
            Ok(_) => "attributed",
            Err(reason) => reason.as_str(),
        };
        *outcomes.entry(name).or_insert(0u64) += 1;
    }

    let t = &fleet.table;
    let ranges = t.len_ranges();
    let memory = t.memory();
    let per_range = memory.ranges_bytes as f64 / ranges as f64;
    // The one-range-per-address worst case: addresses of VMs that keep
    // their owner.
    let single = {
        let mut t = OwnershipTable::new(OwnershipConfig::default());
        t.allow_any("agent");
        let w = Arc::new(workload(0));
        for i in 0..FLEET {
            t.heartbeat(address(i), &w, TimeRange::new(S, 2 * S), "agent", 3 * S);
        }
        t.memory().ranges_bytes as f64 / t.len_ranges() as f64
    };
    let c = t.counters();
    let mb = |b: usize| b as f64 / (1 << 20) as f64;

    println!(
        "\nownership core, one thread: {} addresses, {ranges} ranges ({:.1} per address), {} workloads",
        t.len_ips(),
        ranges as f64 / t.len_ips() as f64,
        t.len_workloads()
    );
    let vs_target = |rate: f64| format!("{rate:>10.0} /s = {:.2}x the target", rate / TARGET_OPS);
    println!("  heartbeats, one call each             {heartbeats:>10.0} /s");
    println!("  heartbeats, 64-flow agent batches     {batched:>10.0} /s");
    println!("  lookups, one call each                {lookups:>10.0} /s");
    println!("  lookups, one call each, Arc cloned    {cloned:>10.0} /s");
    println!("  lookups, 1024 a call                  {many:>10.0} /s");
    println!("  lookups, 1024 a call, Arc cloned      {many_cloned:>10.0} /s");
    println!(
        "  heartbeats + lookups per core, target {TARGET_OPS:.0}/s (every flow is one of each):"
    );
    println!(
        "    interleaved, per agent batch 64 heartbeats + 64 lookups {}",
        vs_target(mixed)
    );
    println!(
        "    1:1 of the batched rates, answers cloned                {}",
        vs_target(mix(batched, many_cloned))
    );
    println!(
        "    1:1 of the one-call-each rates                          {}",
        vs_target(mix(heartbeats, lookups))
    );
    println!(
        "  heartbeat outcomes so far: {} inserted, {} merged, {} covered, {} conflicts, {} refused, {} expired ranges",
        c.inserted, c.merged, c.covered, c.conflicts, c.refused, c.expired
    );
    println!("  lookup outcomes: {outcomes:?}");
    println!(
        "  memory per range: {per_range:.1} B = {:.2}x the {TARGET_BYTES:.0} B target (one range per address: {single:.1} B)",
        per_range / TARGET_BYTES
    );
    println!(
        "  table memory: ranges {:.1} MiB, workloads {:.1} MiB ({:.0} B each), other {:.2} MiB; \
         at setup the allocator counted {:.1} MiB for the fleet and its table, the estimate {:.1} MiB",
        mb(memory.ranges_bytes),
        mb(memory.workloads_bytes),
        memory.workloads_bytes as f64 / t.len_workloads() as f64,
        mb(memory.other_bytes),
        mb(counted_at_setup),
        mb(estimated_at_setup),
    );
}

/// The heap the fleet holds besides the table (addresses, agent names,
/// owners, the workload pool's vector; the workloads themselves the table
/// counts), to compare the allocator's count with the table's estimate.
fn fleet_bytes(fleet: &Fleet) -> usize {
    let vec = |cap: usize, size: usize| match cap * size {
        0 => 0,
        n => block(n),
    };
    vec(fleet.ips.capacity(), size_of::<IpAddr>())
        + vec(fleet.hosts.capacity(), size_of::<String>())
        + fleet
            .hosts
            .iter()
            .map(|h| block(h.capacity()))
            .sum::<usize>()
        + vec(fleet.owner.capacity(), size_of::<usize>())
        + vec(fleet.since.capacity(), size_of::<u64>())
        + vec(fleet.pool.capacity(), size_of::<Arc<Workload>>())
}
