//! The report as a terminal table: the counts side by side, then for each
//! method (the heartbeat method first) its attribution paths, its
//! misattributed flows and its wrong and missed edges.

use std::fmt::Write as _;

use flowattr_model::UnattributedReason;

use crate::{MethodReport, Report};

/// Seconds, for start times.
const SECOND_NS: u64 = 1_000_000_000;

impl Report {
    /// The methods' names and results, the heartbeat method first.
    pub(crate) fn methods(&self) -> [(&str, &MethodReport); 2] {
        [
            ("heartbeat", &self.heartbeat),
            (self.legacy_plugin.as_str(), &self.legacy),
        ]
    }

    /// The report as a terminal table.
    pub fn table(&self) -> String {
        let mut out = self.summary();
        out.push_str(&self.details());
        out
    }

    /// The counts, both methods side by side: a label (indented by two
    /// spaces under the row it details) and each method's cell.
    pub(crate) fn summary_rows(&self) -> Vec<(String, [String; 2])> {
        let methods = self.methods();
        let mut rows = Vec::new();
        let mut row = |label: &str, f: &dyn Fn(&MethodReport) -> String| {
            rows.push((label.to_owned(), [f(methods[0].1), f(methods[1].1)]));
        };
        row("attributed", &|m| m.attributed.to_string());
        row("misattributed (of judged)", &|m| {
            format!("{} ({:.2}%)", m.misattributed, m.misattributed_pct)
        });
        row("unattributed", &|m| m.unattributed.to_string());
        for reason in UnattributedReason::ALL.map(|r| r.as_str()) {
            row(&format!("  {reason}"), &|m| {
                let n = m.unattributed_by_reason.get(reason);
                n.copied().unwrap_or(0).to_string()
            });
        }
        row("unattributed, not ambiguous", &|m| {
            format!(
                "{} ({:.2}%)",
                m.unattributed_unambiguous, m.unattributed_unambiguous_pct
            )
        });
        row("dependency edges", &|m| m.edges.total.to_string());
        row("  right edges", &|m| m.edges.right.to_string());
        row("  wrong edges", &|m| {
            format!("{} ({:.1}%)", m.edges.wrong, m.edges.wrong_pct())
        });
        row("  missed edges", &|m| m.edges.missed.to_string());
        if let Some(focus) = &self.focus {
            row(&format!("{focus} edges"), &|m| {
                m.focus_edges.map_or(0, |e| e.total).to_string()
            });
            row(&format!("  right {focus} edges"), &|m| {
                m.focus_edges.map_or(0, |e| e.right).to_string()
            });
            row(&format!("  wrong {focus} edges"), &|m| {
                m.focus_edges.map_or_else(String::new, |e| {
                    format!("{} ({:.1}%)", e.wrong, e.wrong_pct())
                })
            });
            row(&format!("  missed {focus} edges"), &|m| {
                m.focus_edges.map_or(0, |e| e.missed).to_string()
            });
        }
        rows
    }

    /// The counts, both methods side by side, and the disagreements.
    pub(crate) fn summary(&self) -> String {
        let mut out = String::new();
        let methods = self.methods();
        let _ = writeln!(
            out,
            "{} flows compared, {} with a known owner",
            self.flows, self.judged
        );
        let _ = writeln!(out, "{:<34} {:>16} {:>16}", "", methods[0].0, methods[1].0);
        for (label, [hb, legacy]) in self.summary_rows() {
            let _ = writeln!(out, "{label:<34} {hb:>16} {legacy:>16}");
        }
        let a = &self.agreement;
        let _ = writeln!(
            out,
            "\nagreement: same workload {}, different workloads {}, heartbeat only {}, {} only {}, neither {}",
            a.same_workload,
            a.different_workloads,
            a.heartbeat_only,
            self.legacy_plugin,
            a.legacy_only,
            a.neither
        );
        if !self.disagreements.is_empty() {
            let _ = writeln!(out, "\nexamples of disagreement:");
            let _ = writeln!(
                out,
                "  {:<14} {:<24} {:<22} {:<26} {:<26} truth",
                "start (s)", "local", "remote", "heartbeat", &self.legacy_plugin
            );
            for d in self.disagreements.iter().take(8) {
                let _ = writeln!(
                    out,
                    "  {:<14} {:<24} {:<22} {:<26} {:<26} {}",
                    d.start_ns / SECOND_NS,
                    d.local,
                    d.remote,
                    d.heartbeat,
                    d.legacy,
                    d.truth.as_deref().unwrap_or("?")
                );
            }
        }
        out
    }

    /// Per method: flows by attribution path, misattributed flows, wrong
    /// and missed edges.
    fn details(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{:<34} {:>12} {:>12} {:>14}",
            "attribution paths", "attributed", "judged", "misattributed"
        );
        for (name, m) in self.methods() {
            let _ = writeln!(out, "{name}");
            if m.by_path.is_empty() {
                let _ = writeln!(out, "  (nothing attributed)");
            }
            for p in &m.by_path {
                let _ = writeln!(
                    out,
                    "  {:<32} {:>12} {:>12} {:>14}",
                    p.path, p.attributed, p.judged, p.misattributed
                );
            }
        }
        for (name, m) in self.methods() {
            let shown = m.misattributed_examples.len();
            if shown == 0 {
                let _ = writeln!(out, "\nmisattributed flows, {name}: none");
                continue;
            }
            let _ = writeln!(
                out,
                "\nmisattributed flows, {name} (first {shown} of {}):",
                m.misattributed
            );
            let _ = writeln!(
                out,
                "  {:<24} {:<12} {:<24} {:<22} {:<22} {:<24} truth",
                "path", "start (s)", "local", "local endpoint", "remote", "answer"
            );
            for e in &m.misattributed_examples {
                let _ = writeln!(
                    out,
                    "  {:<24} {:<12} {:<24} {:<22} {:<22} {:<24} {}",
                    e.path,
                    e.start_ns / SECOND_NS,
                    e.local,
                    e.local_endpoint.as_deref().unwrap_or("-"),
                    e.remote,
                    e.answer,
                    e.truth
                );
            }
        }
        for (name, m) in self.methods() {
            if m.wrong_edges.is_empty() {
                let _ = writeln!(out, "\nwrong edges, {name}: none");
            } else {
                let _ = writeln!(out, "\nwrong edges, {name} ({}):", m.edges.wrong);
                for e in &m.wrong_edges {
                    let edge = format!("{} -> {}", e.source, e.destination);
                    let _ = writeln!(out, "  {edge:<48} {:>8} flows", e.flows);
                }
            }
            if m.missed_edges.is_empty() {
                let _ = writeln!(out, "missed edges, {name}: none");
            } else {
                let _ = writeln!(out, "missed edges, {name} ({}):", m.edges.missed);
                for e in &m.missed_edges {
                    let _ = writeln!(out, "  {} -> {}", e.source, e.destination);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    /// The line of `table` whose words are `words`, if any.
    fn row<'t>(table: &'t str, words: &[&str]) -> Option<&'t str> {
        table
            .lines()
            .find(|l| l.split_whitespace().eq(words.iter().copied()))
    }

    #[test]
    fn each_methods_wrong_flows_come_with_path_flow_answer_and_truth_heartbeat_first() {
        let t = crate::sample::report().table();
        let hb = t.find("misattributed flows, heartbeat (first 1 of 1):\n");
        let legacy = t.find("misattributed flows, sonar-legacy (first 2 of 2):\n");
        let (hb, legacy) = (hb.expect(&t), legacy.expect(&t));
        assert!(hb < legacy, "{t}");
        let words: Vec<_> = t[hb..].lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(
            words,
            [
                "heartbeat",
                "110",
                "gw-1",
                "10.1.0.1:5000",
                "10.0.0.7:443",
                "batch-7",
                "api-1"
            ]
        );
    }

    #[test]
    fn paths_reasons_and_missed_edges_are_rows() {
        let t = crate::sample::report().table();
        assert!(row(&t, &["heartbeat", "1", "1", "1"]).is_some(), "{t}");
        assert!(
            row(&t, &["resolver:sonar-legacy", "1", "1", "0"]).is_some(),
            "{t}"
        );
        assert!(
            row(&t, &["resolver:sonar-legacy", "2", "2", "2"]).is_some(),
            "{t}"
        );
        assert!(row(&t, &["incomplete", "1", "0"]).is_some(), "{t}");
        assert!(row(&t, &["not-found", "0", "1"]).is_some(), "{t}");
        assert!(
            row(&t, &["missed", "gateway", "edges", "1", "2"]).is_some(),
            "{t}"
        );
        assert!(
            t.contains("missed edges, heartbeat (2):\n  gateway -> auth\n  api -> db\n"),
            "{t}"
        );
        assert!(
            t.contains("wrong edges, heartbeat (1):\n  gateway -> batch "),
            "{t}"
        );
        assert!(t.contains("misattributed (of judged)") && t.contains("wrong gateway edges"));
    }
}
