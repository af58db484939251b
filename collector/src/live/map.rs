//! The service dependency map of what this collector wrote out: services
//! (a workload's `app`, or its id) as nodes, and per (client, server) pair
//! the flows and bytes between them. A side left unattributed is a node of
//! its own per reason (`unattributed:REASON`), so the map shows how much of
//! a service's traffic goes to or comes from nowhere known.
//!
//! Fed on the core thread with every release's flows, so it must be cheap:
//! within one call a flow whose two workloads are the same `Arc`s as the
//! previous flow's adds to the same edge without hashing (an agent's batch
//! is mostly a few workloads talking to a few others); otherwise one hash
//! lookup by service names, no allocation unless the edge is new.
//!
//! **Bounded:** at most `max_edges` edges per window; a flow whose edge is
//! new once that many are held is counted in `dropped_flows` and
//! `dropped_bytes` and not mapped. Two windows are kept (the current one
//! and the last whole one), so memory is at most `2 × max_edges` edges
//! (about 150 bytes each plus the two service names), and an edge nobody
//! uses leaves the map after two windows. Pure: every call takes the time.

use std::{hash::Hash, sync::Arc};

use flowattr_model::{AttributedFlow, Initiator, Side, UnattributedReason, Workload};
use hashbrown::{Equivalent, HashMap};
use rustc_hash::FxBuildHasher;
use serde::Serialize;

/// One end of an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Service(Arc<str>),
    Unattributed(UnattributedReason),
    /// Not looked at (only a flow forwarded before its remote pass).
    Pending,
}

impl End {
    /// The node's name on the page and in `/v1/map`.
    pub fn name(&self) -> String {
        match self {
            End::Service(s) => s.to_string(),
            End::Unattributed(r) => format!("unattributed:{}", r.as_str()),
            End::Pending => "pending".into(),
        }
    }
}

/// An end as a flow has it, borrowed: looked up without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EndRef<'a> {
    Service(&'a str),
    Unattributed(UnattributedReason),
    Pending,
}

// `End` and `EndRef` hash alike (a tag, then the field), so a borrowed key
// finds its owned one.
impl Hash for EndRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            EndRef::Service(s) => {
                state.write_u8(0);
                s.hash(state);
            }
            EndRef::Unattributed(r) => {
                state.write_u8(1);
                r.hash(state);
            }
            EndRef::Pending => state.write_u8(2),
        }
    }
}

impl Hash for End {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            End::Service(s) => EndRef::Service(s).hash(state),
            End::Unattributed(r) => EndRef::Unattributed(*r).hash(state),
            End::Pending => EndRef::Pending.hash(state),
        }
    }
}

impl EndRef<'_> {
    fn matches(&self, end: &End) -> bool {
        match (self, end) {
            (EndRef::Service(a), End::Service(b)) => *a == &**b,
            (EndRef::Unattributed(a), End::Unattributed(b)) => a == b,
            (EndRef::Pending, End::Pending) => true,
            _ => false,
        }
    }

    fn to_owned(self) -> End {
        match self {
            EndRef::Service(s) => End::Service(s.into()),
            EndRef::Unattributed(r) => End::Unattributed(r),
            EndRef::Pending => End::Pending,
        }
    }
}

#[derive(Hash)]
struct KeyRef<'a>(EndRef<'a>, EndRef<'a>);

impl Equivalent<(End, End)> for KeyRef<'_> {
    fn equivalent(&self, key: &(End, End)) -> bool {
        self.0.matches(&key.0) && self.1.matches(&key.1)
    }
}

/// What an edge carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub flows: u64,
    pub bytes: u64,
}

impl Traffic {
    fn add(&mut self, other: Traffic) {
        self.flows += other.flows;
        self.bytes += other.bytes;
    }
}

/// The memo's edge for a flow that was dropped (no edge has this index:
/// there are at most `max_edges` < 2^32 - 1).
const DROPPED: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Window {
    started_ns: u64,
    /// (client, server) → its index in `traffic`.
    index: HashMap<(End, End), u32, FxBuildHasher>,
    traffic: Vec<Traffic>,
    dropped: Traffic,
}

impl Window {
    fn new(started_ns: u64) -> Self {
        Self {
            started_ns,
            ..Self::default()
        }
    }
}

/// The map's two windows and its bound.
#[derive(Debug)]
pub struct ServiceMap {
    max_edges: usize,
    window_ns: u64,
    current: Window,
    previous: Window,
}

/// The service a workload belongs to: its `app`, or its id.
fn service(w: &Workload) -> &str {
    w.app.as_deref().unwrap_or(&w.id)
}

/// What identifies an end within one call, compared before any hashing: a
/// workload by its `Arc` (alive for the call, so no two differ by value
/// but share a pointer), a reason by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Memo {
    Workload(*const Workload),
    Reason(UnattributedReason),
    Pending,
}

fn end_of(side: &Side) -> (EndRef<'_>, Memo) {
    match side {
        Side::Attributed(a) => (
            EndRef::Service(service(&a.workload)),
            Memo::Workload(Arc::as_ptr(&a.workload)),
        ),
        Side::Unattributed(r) => (EndRef::Unattributed(*r), Memo::Reason(*r)),
        Side::Pending => (EndRef::Pending, Memo::Pending),
    }
}

impl ServiceMap {
    /// At most `max_edges` edges per window of `window_ns`; 0 edges maps
    /// nothing (and costs nothing per flow).
    pub fn new(max_edges: usize, window_ns: u64, now_ns: u64) -> Self {
        Self {
            max_edges,
            window_ns: window_ns.max(1),
            current: Window::new(now_ns),
            previous: Window::new(now_ns),
        }
    }

    /// Whether flows are mapped at all.
    pub fn enabled(&self) -> bool {
        self.max_edges > 0
    }

    /// Starts a new window once the current one is `window_ns` old.
    fn rotate(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.current.started_ns) >= self.window_ns {
            self.previous = std::mem::replace(&mut self.current, Window::new(now_ns));
        }
    }

    /// Maps `flows` (written out at `now_ns`). A flow's edge runs from the
    /// side that opened the connection to the other (local first when the
    /// capture did not see the start).
    pub fn add(&mut self, flows: &[AttributedFlow], now_ns: u64) {
        if !self.enabled() || flows.is_empty() {
            return;
        }
        self.rotate(now_ns);
        let w = &mut self.current;
        // The last flow's ends and its edge: the common case (a batch's
        // flows share a few pairs of workloads) costs two comparisons.
        let mut last: Option<((Memo, Memo), u32)> = None;
        for f in flows {
            let (local, local_memo) = end_of(&f.local);
            let (remote, remote_memo) = end_of(&f.remote);
            let (client, server, memo) = match f.flow.initiator {
                Initiator::Remote => (remote, local, (remote_memo, local_memo)),
                Initiator::Local | Initiator::Unknown => (local, remote, (local_memo, remote_memo)),
            };
            let traffic = Traffic {
                flows: 1,
                bytes: f.flow.bytes_sent + f.flow.bytes_received,
            };
            if let Some((m, i)) = last
                && m == memo
            {
                match w.traffic.get_mut(i as usize) {
                    Some(t) => t.add(traffic),
                    None => w.dropped.add(traffic),
                }
                continue;
            }
            let key = KeyRef(client, server);
            let i = match w.index.get(&key) {
                Some(&i) => i,
                None if w.traffic.len() >= self.max_edges => {
                    w.dropped.add(traffic);
                    last = Some((memo, DROPPED));
                    continue;
                }
                None => {
                    let i = w.traffic.len() as u32;
                    w.index.insert((client.to_owned(), server.to_owned()), i);
                    w.traffic.push(Traffic::default());
                    i
                }
            };
            w.traffic[i as usize].add(traffic);
            last = Some((memo, i));
        }
    }

    /// Both windows together, edges by flows (most first).
    pub fn snapshot(&mut self, now_ns: u64) -> MapSnapshot {
        self.rotate(now_ns);
        let mut merged: HashMap<(End, End), Traffic, FxBuildHasher> = Default::default();
        for w in [&self.previous, &self.current] {
            for (key, &i) in &w.index {
                merged
                    .entry(key.clone())
                    .or_default()
                    .add(w.traffic[i as usize]);
            }
        }
        let mut nodes: HashMap<End, NodeRow, FxBuildHasher> = Default::default();
        for ((client, server), t) in &merged {
            for (end, other) in [(client, server), (server, client)] {
                let node = nodes.entry(end.clone()).or_insert_with(|| NodeRow {
                    name: end.name(),
                    unattributed: !matches!(end, End::Service(_)),
                    ..NodeRow::default()
                });
                node.traffic.add(*t);
                if !matches!(other, End::Service(_)) {
                    node.with_unattributed.add(*t);
                }
            }
        }
        let mut edges: Vec<EdgeRow> = merged
            .into_iter()
            .map(|((client, server), traffic)| EdgeRow {
                unattributed: !matches!(client, End::Service(_))
                    || !matches!(server, End::Service(_)),
                from: client.name(),
                to: server.name(),
                traffic,
            })
            .collect();
        edges.sort_by(|a, b| {
            (b.traffic.flows, &a.from, &a.to).cmp(&(a.traffic.flows, &b.from, &b.to))
        });
        let mut dropped = self.previous.dropped;
        dropped.add(self.current.dropped);
        MapSnapshot {
            since_ns: self.previous.started_ns,
            max_edges: self.max_edges,
            window_ns: self.window_ns,
            nodes: {
                let mut nodes: Vec<NodeRow> = nodes.into_values().collect();
                nodes.sort_by(|a, b| a.name.cmp(&b.name));
                nodes
            },
            edges,
            dropped,
        }
    }
}

/// The map as `/v1/map` returns it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MapSnapshot {
    /// What the map counts started then (the older window's start).
    pub since_ns: u64,
    pub max_edges: usize,
    pub window_ns: u64,
    pub nodes: Vec<NodeRow>,
    pub edges: Vec<EdgeRow>,
    /// Flows whose edge was new when the window already held `max_edges`.
    pub dropped: Traffic,
}

/// A service, or an unattributed reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeRow {
    pub name: String,
    /// Not a service: the flows' side left unattributed for this reason.
    pub unattributed: bool,
    /// Every flow to or from it.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Those whose other side is unattributed.
    pub with_unattributed: Traffic,
}

/// Flows from a client to a server.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeRow {
    pub from: String,
    pub to: String,
    /// One of its ends is unattributed.
    pub unattributed: bool,
    #[serde(flatten)]
    pub traffic: Traffic,
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use flowattr_model::{Attribution, AttributionSource, Flow, TimeRange};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn side(w: &Arc<Workload>) -> Side {
        Side::Attributed(Attribution {
            workload: w.clone(),
            source: AttributionSource::Capture,
            plugin: Arc::default(),
            valid: TimeRange::new(0, 1),
        })
    }

    fn flow(local: Side, remote: Side, initiator: Initiator, bytes: u64) -> AttributedFlow {
        let mut f = AttributedFlow::new(Flow::tcp(
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:2".parse().unwrap(),
            S,
        ));
        f.flow.initiator = initiator;
        f.flow.bytes_sent = bytes;
        f.local = local;
        f.remote = remote;
        f
    }

    fn app(id: &str, app: &str) -> Arc<Workload> {
        let mut w = Workload::with_id(id);
        w.app = Some(app.into());
        Arc::new(w)
    }

    fn edges(s: &MapSnapshot) -> Vec<(String, String, u64, u64)> {
        let mut v: Vec<_> = s
            .edges
            .iter()
            .map(|e| {
                (
                    e.from.clone(),
                    e.to.clone(),
                    e.traffic.flows,
                    e.traffic.bytes,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn edges_join_services_in_the_direction_of_the_call() {
        let (web1, web2, db) = (app("web-1", "web"), app("web-2", "web"), app("db-1", "db"));
        let mut map = ServiceMap::new(10, 600 * S, 0);
        map.add(
            &[
                flow(side(&web1), side(&db), Initiator::Local, 10),
                flow(side(&web1), side(&db), Initiator::Local, 5),
                // Another instance of the same service, on another host.
                flow(side(&web2), side(&db), Initiator::Unknown, 1),
                // The server's own record of a call: the same direction.
                flow(side(&db), side(&web1), Initiator::Remote, 100),
                flow(
                    side(&web1),
                    Side::Unattributed(UnattributedReason::NotFound),
                    Initiator::Local,
                    7,
                ),
                flow(
                    side(&web1),
                    Side::Unattributed(UnattributedReason::Conflict),
                    Initiator::Local,
                    3,
                ),
            ],
            S,
        );
        let s = map.snapshot(2 * S);
        assert_eq!(
            edges(&s),
            vec![
                ("web".into(), "db".into(), 4, 116),
                ("web".into(), "unattributed:conflict".into(), 1, 3),
                ("web".into(), "unattributed:not-found".into(), 1, 7),
            ]
        );
        let web = s.nodes.iter().find(|n| n.name == "web").unwrap();
        assert_eq!((web.traffic.flows, web.with_unattributed.flows), (6, 2));
        assert!(
            s.nodes
                .iter()
                .any(|n| n.name == "unattributed:conflict" && n.unattributed)
        );
        assert!(s.edges.iter().filter(|e| e.unattributed).count() == 2);
    }

    #[test]
    fn past_the_cap_flows_are_counted_not_mapped_and_windows_age_out() {
        let ws: Vec<_> = (0..5)
            .map(|i| app(&format!("w{i}"), &format!("s{i}")))
            .collect();
        let mut map = ServiceMap::new(2, 100 * S, 0);
        let flows: Vec<_> = ws
            .iter()
            .map(|w| flow(side(w), side(&ws[0]), Initiator::Local, 10))
            .collect();
        map.add(&flows, S);
        let s = map.snapshot(S);
        assert_eq!(s.edges.len(), 2);
        assert_eq!((s.dropped.flows, s.dropped.bytes), (3, 30));
        // Consecutive flows of a dropped edge are dropped too (by the memo).
        map.add(&[flows[4].clone(), flows[4].clone()], S);
        assert_eq!(map.snapshot(S).dropped.flows, 5);
        // A known edge still counts past the cap.
        map.add(&flows[..1], 2 * S);
        assert_eq!(map.snapshot(2 * S).edges[0].traffic.flows, 2);
        // A window later the old edges are the previous window's; two
        // windows later they are gone, and so is what was dropped.
        map.add(&flows[4..], 101 * S);
        let s = map.snapshot(101 * S);
        assert_eq!((s.edges.len(), s.dropped.flows), (3, 5));
        let s = map.snapshot(202 * S);
        assert_eq!((s.edges.len(), s.dropped.flows), (1, 0));
        let s = map.snapshot(303 * S);
        assert!(s.edges.is_empty());
        let mut off = ServiceMap::new(0, S, 0);
        off.add(&flows, S);
        assert!(off.snapshot(S).edges.is_empty());
    }

    /// Not a benchmark of record (see docs/benchmarks.md), but it prints
    /// the cost per flow: `cargo test --release -p flowattr-collector
    /// map_cost -- --nocapture`.
    #[test]
    fn map_cost_per_flow() {
        // 10,000 flows as an agent's batch has them: 50 local workloads
        // each calling 20 of 200 remote ones, some unattributed.
        let locals: Vec<_> = (0..50)
            .map(|i| app(&format!("l{i}"), &format!("svc{}", i % 25)))
            .collect();
        let remotes: Vec<_> = (0..200)
            .map(|i| app(&format!("r{i}"), &format!("dep{}", i % 60)))
            .collect();
        let flows: Vec<_> = (0..10_000)
            .map(|i| {
                let remote = if i % 50 == 0 {
                    Side::Unattributed(UnattributedReason::Incomplete)
                } else {
                    side(&remotes[(i / 7) % 200])
                };
                flow(
                    side(&locals[(i / 200) % 50]),
                    remote,
                    Initiator::Local,
                    1500,
                )
            })
            .collect();
        let mut map = ServiceMap::new(2000, 600 * S, 0);
        map.add(&flows, 0);
        let rounds = 200;
        let t = Instant::now();
        for r in 0..rounds {
            map.add(std::hint::black_box(&flows), r);
        }
        let per_flow = t.elapsed().as_nanos() as f64 / (rounds * flows.len() as u64) as f64;
        println!("service map: {per_flow:.1} ns per flow");
        assert!(map.snapshot(rounds).edges.len() > 100);
    }
}
