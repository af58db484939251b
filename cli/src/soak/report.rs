//! Reading the soak's outputs back with plain clients, and judging them.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};

use super::{load, procs::Faults};

/// One output record, as much of it as the judge needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    local_ip: Option<IpAddr>,
    local: Result<String, String>,
    remote_ip: Option<IpAddr>,
    remote: Result<String, String>,
}

fn side(v: &serde_json::Value) -> Result<String, String> {
    match (&v["workload"]["id"], &v["unattributed"]) {
        (serde_json::Value::String(id), _) => Ok(id.clone()),
        (_, serde_json::Value::String(reason)) => Err(reason.clone()),
        _ => Err("no workload or reason".into()),
    }
}

/// Parses JSON lines into `out`. In a file (`file_tail`), an unfinished
/// last line is a torn write of a collector killed mid-chunk (written again
/// whole elsewhere), counted apart from malformed lines.
fn parse_lines(text: &str, file_tail: bool, out: &mut OutputRecords) {
    let torn_tail = file_tail && !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    for (i, line) in lines.iter().enumerate() {
        let record = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| {
                Some(Record {
                    id: v["record_id"].as_str()?.to_owned(),
                    local_ip: v["local"]["ip"].as_str().and_then(|s| s.parse().ok()),
                    local: side(&v["local"]),
                    remote_ip: v["remote"]["ip"].as_str().and_then(|s| s.parse().ok()),
                    remote: side(&v["remote"]),
                })
            });
        match record {
            Some(r) => out.records.push(r),
            None if torn_tail && i + 1 == lines.len() => out.torn += 1,
            None => out.malformed += 1,
        }
    }
}

/// What one output holds.
#[derive(Debug, Default)]
pub struct OutputRecords {
    pub records: Vec<Record>,
    pub malformed: u64,
    /// Unfinished last lines of files.
    pub torn: u64,
}

/// Every record in the topic, read from the beginning of every partition
/// until `want` distinct ids arrived and nothing more came for five
/// seconds, or nothing at all came for a minute (a broker reads back at its
/// own pace: a long soak's topic takes minutes).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    want: usize,
) -> anyhow::Result<OutputRecords> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "soak-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "33554432")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = OutputRecords::default();
    let mut ids = HashSet::new();
    let mut last = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let before = out.records.len();
                let text = String::from_utf8_lossy(m.payload().unwrap_or_default());
                parse_lines(&text, false, &mut out);
                ids.extend(out.records[before..].iter().map(|r| r.id.clone()));
                last = Instant::now();
            }
            Some(Err(e)) => tracing::debug!(error = %e, "soak reader"),
            None => {}
        }
        let quiet = last.elapsed();
        if (ids.len() >= want && quiet > Duration::from_secs(5)) || quiet > Duration::from_secs(60)
        {
            break;
        }
    }
    Ok(out)
}

/// Every record in the JSON-lines files under `dirs`.
pub fn read_files(dirs: &[PathBuf]) -> anyhow::Result<OutputRecords> {
    let mut out = OutputRecords::default();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        for f in files {
            parse_lines(&std::fs::read_to_string(&f)?, true, &mut out);
        }
    }
    Ok(out)
}

/// One output's verdict.
#[derive(Debug, Default)]
pub struct Verdict {
    pub records: usize,
    pub delivered: usize,
    /// Records beyond the first of their id (all carry that id).
    pub repeated: usize,
    /// Of those, copies whose attribution differs from the first copy's.
    pub repeated_differing: usize,
    pub lost: usize,
    pub wrong: usize,
    pub wrong_examples: Vec<Record>,
    /// Records whose id the agents never sent.
    pub unknown: usize,
    pub malformed: u64,
    pub torn: u64,
    pub unattributed: BTreeMap<String, usize>,
}

impl Verdict {
    fn judge(sent: &HashSet<String>, output: &OutputRecords, agents: usize) -> Self {
        let mut v = Verdict {
            records: output.records.len(),
            malformed: output.malformed,
            torn: output.torn,
            ..Verdict::default()
        };
        let mut first: HashMap<&str, &Record> = HashMap::new();
        for r in &output.records {
            if !sent.contains(&r.id) {
                v.unknown += 1;
            }
            match first.get(r.id.as_str()) {
                Some(f) => {
                    v.repeated += 1;
                    if (&f.local, &f.remote) != (&r.local, &r.remote) {
                        v.repeated_differing += 1;
                    }
                }
                None => {
                    first.insert(&r.id, r);
                }
            }
            let truth = |ip: Option<IpAddr>| ip.and_then(|ip| load::owner(ip, agents));
            let wrong_side = |got: &Result<String, String>, ip| match got {
                Ok(w) => truth(ip).as_deref() != Some(w.as_str()),
                Err(_) => false,
            };
            if wrong_side(&r.local, r.local_ip) || wrong_side(&r.remote, r.remote_ip) {
                v.wrong += 1;
                if v.wrong_examples.len() < 5 {
                    v.wrong_examples.push(r.clone());
                }
            }
            for side in [&r.local, &r.remote] {
                if let Err(reason) = side {
                    *v.unattributed.entry(reason.clone()).or_default() += 1;
                }
            }
        }
        v.delivered = first.len();
        v.lost = sent
            .iter()
            .filter(|id| !first.contains_key(id.as_str()))
            .count();
        v
    }
}

/// The soak's result.
pub struct Report {
    pub sent: usize,
    pub batches: u64,
    pub kafka: Verdict,
    pub files: Verdict,
    pub faults: Faults,
    pub peak_rss: [u64; 2],
    pub rss_bound: u64,
    pub drained: bool,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn judge(
        sent: &load::Sent,
        kafka: &OutputRecords,
        files: &OutputRecords,
        agents: usize,
        faults: Faults,
        peak_rss: [u64; 2],
        rss_bound: u64,
        drained: bool,
    ) -> Self {
        Self {
            sent: sent.ids.len(),
            batches: sent.batches,
            kafka: Verdict::judge(&sent.ids, kafka, agents),
            files: Verdict::judge(&sent.ids, files, agents),
            faults,
            peak_rss,
            rss_bound,
            drained,
        }
    }

    pub fn passed(&self) -> bool {
        self.drained
            && [&self.kafka, &self.files]
                .iter()
                .all(|v| v.lost == 0 && v.wrong == 0 && v.unknown == 0 && v.malformed == 0)
            && self.peak_rss.iter().all(|&p| p <= self.rss_bound)
    }

    pub fn print(&self, took: Duration) {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!();
        println!(
            "soak report ({} in all)",
            humantime::format_duration(Duration::from_secs(took.as_secs()))
        );
        println!(
            "  flows sent           {:>10} in {} batches",
            self.sent, self.batches
        );
        println!("  {:<20} {:>10} {:>10}", "", "kafka", "files");
        for (label, k, f) in [
            ("records read", self.kafka.records, self.files.records),
            ("delivered", self.kafka.delivered, self.files.delivered),
            ("delivered again", self.kafka.repeated, self.files.repeated),
            (
                "  differing",
                self.kafka.repeated_differing,
                self.files.repeated_differing,
            ),
            ("lost (must be 0)", self.kafka.lost, self.files.lost),
            ("wrong (must be 0)", self.kafka.wrong, self.files.wrong),
            ("unknown ids", self.kafka.unknown, self.files.unknown),
        ] {
            println!("  {label:<20} {k:>10} {f:>10}");
        }
        println!(
            "  {:<20} {:>10} {:>10}",
            "malformed lines", self.kafka.malformed, self.files.malformed
        );
        println!(
            "  {:<20} {:>10} {:>10}",
            "torn last lines", self.kafka.torn, self.files.torn
        );
        let reasons: HashSet<&String> = self
            .kafka
            .unattributed
            .keys()
            .chain(self.files.unattributed.keys())
            .collect();
        let mut reasons: Vec<_> = reasons.into_iter().collect();
        reasons.sort();
        for r in reasons {
            println!(
                "  unattributed {:<11} {:>8} {:>10}",
                r,
                self.kafka.unattributed.get(r).unwrap_or(&0),
                self.files.unattributed.get(r).unwrap_or(&0)
            );
        }
        for (what, v) in [("kafka", &self.kafka), ("files", &self.files)] {
            for r in &v.wrong_examples {
                println!("  wrong in {what}: {r:?}");
            }
        }
        println!(
            "  peak RSS             collector-1 {:.0} MiB, collector-2 {:.0} MiB (bound {:.0} MiB)",
            mib(self.peak_rss[0]),
            mib(self.peak_rss[1]),
            mib(self.rss_bound)
        );
        let f = &self.faults;
        println!(
            "  faults               {} collector kills (SIGKILL), {} broker restarts, {} broker freezes (10 s), {} disk fills (10 s), {} sink swaps",
            f.collector_kills, f.broker_restarts, f.broker_freezes, f.disk_fills, f.sink_swaps
        );
        for s in &f.skipped {
            println!("  not injected: {s}");
        }
        if !self.drained {
            println!("  NOT DRAINED: spools or journals still held batches at the end");
        }
        println!("  {}", if self.passed() { "PASSED" } else { "FAILED" });
    }
}
