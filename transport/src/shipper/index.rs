//! The spool's bookkeeping (pure): which batches are spooled, in age
//! order, their sizes, which are being sent, when a failed one may be sent
//! again, which to drop when the spool is over its bound, and which agent
//! names a collector refuses (their batches wait, and one at a time is
//! offered again as a probe).

use std::collections::BTreeMap;

use flowattr_model::BatchId;
use tokio::time::Instant;

/// A spooled batch's key: ordered oldest first (agent run, then sequence).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SpoolKey {
    pub incarnation: u64,
    pub seq: u64,
    pub agent: String,
}

impl SpoolKey {
    pub fn of(id: &BatchId) -> Self {
        Self {
            incarnation: id.incarnation,
            seq: id.seq,
            agent: id.agent.clone(),
        }
    }

    pub fn id(&self) -> BatchId {
        BatchId {
            agent: self.agent.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
        }
    }
}

/// One spooled batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub bytes: u64,
    pub flows: u64,
    /// Being sent (not dropped for space, not picked again).
    pub in_flight: bool,
    /// Not to be sent before this time (after a failure).
    pub not_before: Option<Instant>,
    /// The watermark of the batch spooled before it by this run: every
    /// flow in this batch ended at or after it (0 for a batch found in the
    /// spool at start, whose predecessor is not known).
    pub after_ns: u64,
    /// Its own watermark (`u64::MAX` when not known).
    pub watermark_ns: u64,
}

/// A batch dropped to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub key: SpoolKey,
    pub flows: u64,
}

/// An agent name a collector refused batches of: none of its batches is
/// sent before `until`, and then one at a time (the probe) until one is
/// accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hold {
    until: Instant,
    probe: Option<SpoolKey>,
}

/// The spool's entries and their total size against a bound.
#[derive(Debug)]
pub(crate) struct SpoolIndex {
    max_bytes: u64,
    entries: BTreeMap<SpoolKey, Entry>,
    bytes: u64,
    /// By agent name.
    holds: BTreeMap<String, Hold>,
}

impl SpoolIndex {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            entries: BTreeMap::new(),
            bytes: 0,
            holds: BTreeMap::new(),
        }
    }

    /// The agent names the spooled batches carry, with how many each.
    pub fn agents(&self) -> BTreeMap<&str, usize> {
        let mut agents = BTreeMap::new();
        for key in self.entries.keys() {
            *agents.entry(key.agent.as_str()).or_default() += 1;
        }
        agents
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&self, key: &SpoolKey) -> Option<Entry> {
        self.entries.get(key).copied()
    }

    /// Adds (or replaces) an entry.
    pub fn insert(&mut self, key: SpoolKey, entry: Entry) {
        self.bytes += entry.bytes;
        if let Some(old) = self.entries.insert(key, entry) {
            self.bytes -= old.bytes;
        }
    }

    /// Removes an entry; whether it was there.
    pub fn remove(&mut self, key: &SpoolKey) -> bool {
        self.end_probe(key);
        match self.entries.remove(key) {
            Some(old) => {
                self.bytes -= old.bytes;
                true
            }
            None => false,
        }
    }

    /// The oldest entries to drop, not being sent and not `keep`, until the
    /// total fits the bound (removed from the index; the caller deletes
    /// their files). Entries being sent stay, so the bound may be exceeded
    /// by them until they are answered.
    pub fn evict(&mut self, keep: &SpoolKey) -> Vec<Evicted> {
        let mut evicted = Vec::new();
        while self.bytes > self.max_bytes {
            let victim = self
                .entries
                .iter()
                .find(|(k, e)| !e.in_flight && *k != keep)
                .map(|(k, e)| (k.clone(), e.flows));
            let Some((key, flows)) = victim else { break };
            self.remove(&key);
            evicted.push(Evicted { key, flows });
        }
        evicted
    }

    /// The watermark batch `key` may state when sent now: its own, unless
    /// an older batch is still unanswered, whose flows the collector does
    /// not have yet; then no later than the watermark before that batch.
    /// `None` when the batch's own stands (or it is gone).
    pub fn watermark_cap(&self, key: &SpoolKey) -> Option<u64> {
        let own = self.entries.get(key)?.watermark_ns;
        let floor = self.entries.range(..key).map(|(_, e)| e.after_ns).min()?;
        Some(floor.min(own))
    }

    /// Marks an entry as being sent; `false` when it is gone (dropped for
    /// space), already being sent, or of a held agent name (it waits for
    /// [`SpoolIndex::take_ready`]).
    pub fn mark_in_flight(&mut self, key: &SpoolKey) -> bool {
        if self.holds.contains_key(&key.agent) {
            return false;
        }
        match self.entries.get_mut(key) {
            Some(e) if !e.in_flight => {
                e.in_flight = true;
                true
            }
            _ => false,
        }
    }

    /// Marks an entry as no longer being sent, to be sent again from
    /// `not_before` (or at once).
    pub fn release(&mut self, key: &SpoolKey, not_before: Option<Instant>) {
        self.end_probe(key);
        if let Some(e) = self.entries.get_mut(key) {
            e.in_flight = false;
            e.not_before = not_before;
        }
    }

    /// Whether the refusal of batch `key` for its agent name should hold
    /// that name back for longer: when the name is not held yet, when the
    /// refused batch was the probe, or when the hold has run out. A batch
    /// already on its way when the name was first refused does not.
    pub fn refusal_extends_hold(&self, key: &SpoolKey, now: Instant) -> bool {
        match self.holds.get(&key.agent) {
            None => true,
            Some(hold) => hold.probe.as_ref() == Some(key) || hold.until <= now,
        }
    }

    /// Holds back the batches naming `agent` until `until`; then they are
    /// offered one at a time.
    pub fn hold(&mut self, agent: &str, until: Instant) {
        self.holds
            .insert(agent.to_owned(), Hold { until, probe: None });
    }

    /// Lets the batches naming `agent` go again; whether they were held.
    pub fn unhold(&mut self, agent: &str) -> bool {
        self.holds.remove(agent).is_some()
    }

    /// Spooled batches of held agent names.
    pub fn held(&self) -> usize {
        if self.holds.is_empty() {
            return 0;
        }
        self.entries
            .keys()
            .filter(|k| self.holds.contains_key(&k.agent))
            .count()
    }

    fn end_probe(&mut self, key: &SpoolKey) {
        if let Some(hold) = self.holds.get_mut(&key.agent)
            && hold.probe.as_ref() == Some(key)
        {
            hold.probe = None;
        }
    }

    /// When the entry may be sent: `None` while it is being sent or its
    /// agent name's probe is out, else the later of its retry time and its
    /// name's hold (`Some(None)`: now).
    fn due(&self, key: &SpoolKey, e: &Entry) -> Option<Option<Instant>> {
        if e.in_flight {
            return None;
        }
        match self.holds.get(&key.agent) {
            None => Some(e.not_before),
            Some(hold) if hold.probe.is_some() => None,
            Some(hold) => Some(Some(e.not_before.map_or(hold.until, |t| t.max(hold.until)))),
        }
    }

    fn ready(&self, key: &SpoolKey, e: &Entry, now: Instant) -> bool {
        self.due(key, e)
            .is_some_and(|at| at.is_none_or(|t| t <= now))
    }

    /// Whether an entry may be sent now.
    pub fn has_ready(&self, now: Instant) -> bool {
        self.entries.iter().any(|(k, e)| self.ready(k, e, now))
    }

    /// The oldest entry that may be sent now, marked as being sent (and,
    /// of a held agent name, as its probe).
    pub fn take_ready(&mut self, now: Instant) -> Option<SpoolKey> {
        let key = self
            .entries
            .iter()
            .find(|(k, e)| self.ready(k, e, now))
            .map(|(k, _)| k.clone())?;
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.in_flight = true;
        }
        if let Some(hold) = self.holds.get_mut(&key.agent) {
            hold.probe = Some(key.clone());
        }
        Some(key)
    }

    /// The earliest time a waiting entry becomes ready.
    pub fn next_ready_at(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter_map(|(k, e)| self.due(k, e).flatten())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(seq: u64) -> SpoolKey {
        SpoolKey {
            incarnation: 1,
            seq,
            agent: "a".into(),
        }
    }

    fn entry(bytes: u64) -> Entry {
        Entry {
            bytes,
            flows: bytes * 10,
            in_flight: false,
            not_before: None,
            after_ns: 0,
            watermark_ns: u64::MAX,
        }
    }

    #[test]
    fn eviction_drops_the_oldest_idle_entries_until_the_total_fits() {
        let mut index = SpoolIndex::new(100);
        for seq in 0..4 {
            index.insert(key(seq), entry(30));
        }
        // Seq 0 is being sent: seq 1 is the oldest that may go.
        index.take_ready(Instant::now());
        let evicted = index.evict(&key(3));
        assert_eq!(
            evicted,
            [Evicted {
                key: key(1),
                flows: 300
            }]
        );
        assert_eq!((index.len(), index.bytes()), (3, 90));
        // Everything else in flight or kept: over the bound, nothing to drop.
        index.insert(key(4), entry(30));
        index.take_ready(Instant::now());
        index.take_ready(Instant::now());
        assert_eq!(index.evict(&key(4)), []);
        assert_eq!(index.bytes(), 120);
    }

    #[test]
    fn ready_entries_come_oldest_first_and_respect_their_delay() {
        let now = Instant::now();
        let mut index = SpoolIndex::new(u64::MAX);
        index.insert(key(2), entry(1));
        index.insert(key(1), entry(1));
        assert_eq!(index.take_ready(now), Some(key(1)));
        let later = now + Duration::from_secs(1);
        index.release(&key(1), Some(later));
        assert_eq!(index.take_ready(now), Some(key(2)));
        assert_eq!(index.take_ready(now), None);
        assert!(!index.has_ready(now));
        assert_eq!(index.next_ready_at(), Some(later));
        assert_eq!(index.take_ready(later), Some(key(1)));
        assert_eq!(index.next_ready_at(), None);
    }

    #[test]
    fn an_entry_is_marked_in_flight_once() {
        let mut index = SpoolIndex::new(u64::MAX);
        index.insert(key(1), entry(1));
        assert!(index.mark_in_flight(&key(1)));
        assert!(!index.mark_in_flight(&key(1)));
        assert!(!index.mark_in_flight(&key(2)));
        assert_eq!(index.take_ready(Instant::now()), None);
    }

    #[test]
    fn replacing_an_entry_keeps_the_total_right() {
        let mut index = SpoolIndex::new(u64::MAX);
        index.insert(key(1), entry(10));
        index.insert(key(1), entry(20));
        assert_eq!(index.bytes(), 20);
        assert!(index.remove(&key(1)));
        assert!(!index.remove(&key(1)));
        assert_eq!(index.bytes(), 0);
    }

    fn named(agent: &str, seq: u64) -> SpoolKey {
        SpoolKey {
            agent: agent.into(),
            ..key(seq)
        }
    }

    #[test]
    fn a_refused_name_waits_then_sends_one_probe_at_a_time() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut index = SpoolIndex::new(u64::MAX);
        for seq in 0..3 {
            index.insert(named("old", seq), entry(1));
        }
        index.insert(named("new", 9), entry(1));
        // Batch 0 goes, batch 1 follows before the first refusal comes back.
        assert_eq!(index.take_ready(now), Some(named("old", 0)));
        assert_eq!(index.take_ready(now), Some(named("old", 1)));
        assert!(index.refusal_extends_hold(&named("old", 0), now));
        index.hold("old", later);
        index.release(&named("old", 0), None);
        // The second refusal was already on its way: the hold stands.
        assert!(!index.refusal_extends_hold(&named("old", 1), now));
        index.release(&named("old", 1), None);
        assert_eq!(index.held(), 3);
        // Held: the other name's batch goes, none of "old"'s, not even a new one.
        assert!(!index.mark_in_flight(&named("old", 2)));
        assert_eq!(index.take_ready(now), Some(named("new", 9)));
        assert_eq!(index.take_ready(now), None);
        assert_eq!(index.next_ready_at(), Some(later));
        // Then one probe, the oldest; nothing else of the name meanwhile.
        assert_eq!(index.take_ready(later), Some(named("old", 0)));
        assert_eq!(index.take_ready(later), None);
        assert_eq!(index.next_ready_at(), None);
        // The probe refused again: the hold is extended.
        assert!(index.refusal_extends_hold(&named("old", 0), later));
        let again = later + Duration::from_secs(2);
        index.hold("old", again);
        index.release(&named("old", 0), None);
        assert_eq!(index.next_ready_at(), Some(again));
        // A probe that fails otherwise (no answer) frees the next probe.
        assert_eq!(index.take_ready(again), Some(named("old", 0)));
        index.release(&named("old", 0), Some(again + Duration::from_secs(1)));
        assert_eq!(index.take_ready(again), Some(named("old", 1)));
        // Accepted: the name is let go, and everything of it flows.
        index.remove(&named("old", 1));
        assert!(index.unhold("old"));
        assert_eq!(index.held(), 0);
        assert!(index.mark_in_flight(&named("old", 2)));
        assert_eq!(index.agents().get("old"), Some(&2));
    }

    #[test]
    fn a_batch_states_no_watermark_past_an_older_unanswered_batch() {
        let mut index = SpoolIndex::new(1 << 20);
        let with = |after_ns, watermark_ns| Entry {
            after_ns,
            watermark_ns,
            ..entry(1)
        };
        index.insert(key(1), with(100, 200));
        index.insert(key(2), with(200, 300));
        index.insert(key(3), with(300, 400));
        assert_eq!(
            index.watermark_cap(&key(1)),
            None,
            "the oldest states its own"
        );
        assert_eq!(
            index.watermark_cap(&key(3)),
            Some(100),
            "batch 1's flows may end at 100"
        );
        index.remove(&key(1));
        assert_eq!(index.watermark_cap(&key(3)), Some(200));
        index.remove(&key(2));
        assert_eq!(index.watermark_cap(&key(3)), None);
        // A batch found in the spool at start: nothing is known before it.
        index.insert(
            SpoolKey {
                incarnation: 0,
                seq: 9,
                agent: "a".into(),
            },
            entry(1),
        );
        assert_eq!(index.watermark_cap(&key(3)), Some(0));
    }
}
