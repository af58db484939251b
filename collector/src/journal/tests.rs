use super::*;

fn id(agent: &str, seq: u64) -> BatchId {
    BatchId {
        agent: agent.into(),
        incarnation: 9,
        seq,
    }
}

fn entry<'a>(id: BatchId, body: &'a [u8]) -> JournalEntry<'a> {
    JournalEntry {
        id,
        peer: "agent a",
        clock_trusted: true,
        body,
    }
}

/// Every entry left, in order, as (id, body).
fn recover_all(store: &MemoryStore) -> (Journal, Vec<(BatchId, Vec<u8>)>, Recovery) {
    let (mut j, mut rec) = Journal::with_store(Box::new(store.clone()), 100).unwrap();
    let mut out = Vec::new();
    while let Some(e) = j.recover_next(&mut rec) {
        let parsed = JournalEntry::parse(&e.bytes).unwrap();
        out.push((parsed.id.clone(), parsed.body.to_vec()));
    }
    (j, out, rec)
}

#[test]
fn entries_keep_the_batch_id_the_sender_and_whether_its_clock_was_trusted() {
    for trusted in [true, false] {
        let mut bytes = Vec::new();
        JournalEntry {
            id: id("agent a/ü\t", 3),
            peer: "agent a",
            clock_trusted: trusted,
            body: b"body\nwith newline",
        }
        .encode(&mut bytes);
        let e = JournalEntry::parse(&bytes).unwrap();
        assert_eq!(e.id, id("agent a/ü\t", 3));
        assert_eq!((e.peer, e.clock_trusted), ("agent a", trusted));
        assert_eq!(e.body, b"body\nwith newline");
    }
    assert!(JournalEntry::parse(b"no header").is_err());
    assert!(JournalEntry::parse(b"zz.1.2\tpeer\ttrusted\nbody").is_err());
}

#[test]
fn only_synced_entries_survive_a_power_loss_and_every_one_of_them_does() {
    let store = MemoryStore::new();
    let (mut j, _) = Journal::with_store(Box::new(store.clone()), 100).unwrap();
    j.append(&entry(id("a", 0), b"zero")).unwrap();
    j.append(&entry(id("a", 1), b"one")).unwrap();
    j.sync().unwrap();
    j.append(&entry(id("a", 2), b"two, never synced")).unwrap();

    let (_, after_power_loss, rec) = recover_all(&store.power_loss());
    assert_eq!(
        after_power_loss,
        vec![
            (id("a", 0), b"zero".to_vec()),
            (id("a", 1), b"one".to_vec())
        ]
    );
    assert!(rec.damaged.is_empty());
    let (_, after_kill, _) = recover_all(&store);
    assert_eq!(after_kill.len(), 3, "a kill keeps what the process wrote");
}

#[test]
fn a_torn_last_entry_is_dropped_and_damage_before_the_end_is_reported() {
    let store = MemoryStore::new();
    let (mut j, _) = Journal::with_store(Box::new(store.clone()), 100).unwrap();
    j.append(&entry(id("a", 0), b"zero")).unwrap();
    j.append(&entry(id("a", 1), b"one")).unwrap();
    j.sync().unwrap();
    let name = segment_name(0);
    let mut bytes = Vec::new();
    store.open(&name).unwrap().read_to_end(&mut bytes).unwrap();

    // Cut inside the second entry: torn, the first survives.
    let mut torn = MemoryStore::new();
    torn.replace(&name, &bytes[..bytes.len() - 2]).unwrap();
    let (_, entries, rec) = recover_all(&torn);
    assert_eq!(entries.len(), 1);
    assert_eq!((rec.torn, rec.damaged.len()), (1, 0));

    // A flipped byte in the first entry, with the second after it: damage.
    let mut flipped = bytes.clone();
    flipped[FRAME_HEADER + 2] ^= 0xff;
    let mut damaged = MemoryStore::new();
    damaged.replace(&name, &flipped).unwrap();
    let (mut j, entries, rec) = recover_all(&damaged);
    assert!(entries.is_empty());
    assert_eq!(rec.damaged, vec![name.clone()]);
    j.written_out([]).unwrap();
    assert!(damaged.names().unwrap().contains(&name), "left in place");
}

#[test]
fn a_segment_goes_once_every_batch_in_it_was_written_out() {
    let store = MemoryStore::new();
    let (mut j, _) = Journal::with_store(Box::new(store.clone()), 100).unwrap();
    j.append(&entry(id("a", 0), b"zero")).unwrap();
    j.append(&entry(id("a", 1), b"one")).unwrap();
    j.sync().unwrap();
    j.written_out([&id("a", 0)]).unwrap();
    assert_eq!(j.pending(), 1);
    assert!(store.names().unwrap().contains(&segment_name(0)));
    j.written_out([&id("a", 1)]).unwrap();
    assert_eq!((j.pending(), j.segments()), (0, 0));
    assert!(!store.names().unwrap().contains(&segment_name(0)));
    // The next entry starts a new segment.
    j.append(&entry(id("a", 2), b"two")).unwrap();
    j.sync().unwrap();
    assert!(store.names().unwrap().contains(&segment_name(1)));
}

#[test]
fn recovered_segments_go_once_their_batches_are_written_out_again() {
    let store = MemoryStore::new();
    let (mut j, _) = Journal::with_store(Box::new(store.clone()), 100).unwrap();
    j.append(&entry(id("a", 0), b"zero")).unwrap();
    j.append(&entry(id("a", 0), b"zero again")).unwrap();
    j.append(&entry(id("a", 1), b"one")).unwrap();
    j.sync().unwrap();
    drop(j);
    let (mut j, entries, rec) = recover_all(&store);
    assert!(rec.is_done());
    assert_eq!(
        entries.iter().map(|(id, _)| id.seq).collect::<Vec<_>>(),
        [0, 1],
        "a batch journaled twice is replayed once"
    );
    assert_eq!(j.pending(), 2);
    j.written_out([&id("a", 0), &id("a", 1)]).unwrap();
    assert_eq!(store.names().unwrap(), [EMITTED_LOG]);
}

#[test]
fn an_abandoned_sync_seals_its_segment_and_its_entries_are_not_pending() {
    let store = MemoryStore::new();
    let (mut j, _) = Journal::with_store(Box::new(store.clone()), 100).unwrap();
    j.append(&entry(id("a", 0), b"zero")).unwrap();
    j.abandon([&id("a", 0)]);
    assert_eq!(j.pending(), 0);
    j.append(&entry(id("a", 1), b"one")).unwrap();
    j.sync().unwrap();
    assert!(store.names().unwrap().contains(&segment_name(1)));
}

#[test]
fn written_out_ids_survive_a_restart_and_their_log_stays_bounded() {
    let store = MemoryStore::new();
    let (mut j, _) = Journal::with_store(Box::new(store.clone()), 2).unwrap();
    for seq in 0..10 {
        j.written_out([&id("a", seq)]).unwrap();
    }
    drop(j);
    let (_, rec) = Journal::with_store(Box::new(store.clone()), 2).unwrap();
    assert_eq!(rec.emitted, vec![id("a", 8), id("a", 9)]);
}

#[test]
fn stray_files_are_reported_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nonsense.batch"), b"x").unwrap();
    let (mut j, mut rec) = Journal::open(dir.path(), 2).unwrap();
    assert!(j.recover_next(&mut rec).is_none());
    assert_eq!(rec.unreadable, vec!["nonsense.batch".to_owned()]);
}

#[test]
fn a_directory_journal_replays_what_a_killed_run_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 10).unwrap();
    j.append(&entry(id("a", 0), b"zero")).unwrap();
    j.sync().unwrap();
    drop(j);
    let (mut j, mut rec) = Journal::open(dir.path(), 10).unwrap();
    let e = j.recover_next(&mut rec).unwrap();
    assert_eq!(JournalEntry::parse(&e.bytes).unwrap().body, b"zero");
    assert!(j.recover_next(&mut rec).is_none());
}
