//! The report as one self-contained HTML page: inline SVG charts, the
//! summary, then per method (the heartbeat method first) tables of its
//! attribution paths, misattributed flows and wrong and missed edges;
//! inline CSS, no scripts and nothing fetched, so it opens anywhere.

use std::fmt::Write as _;

use crate::{MethodReport, Report, TimeBucket};

/// The heartbeat method's colour in every chart.
pub const HEARTBEAT_COLOUR: &str = "#1b9e77";
/// The legacy method's colour in every chart.
pub const LEGACY_COLOUR: &str = "#d95f02";
const WRONG_COLOUR: &str = "#c0392b";
const RIGHT_COLOUR: &str = "#7fb3d5";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How long `buckets` span, as `2h 30m` or `45m` or `30s`.
fn span_label(buckets: &[TimeBucket]) -> String {
    let secs = match (buckets.first(), buckets.last()) {
        (Some(a), Some(b)) => (b.start_ns - a.start_ns) / 1_000_000_000,
        _ => 0,
    };
    match (secs / 3600, secs % 3600 / 60) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    }
}

/// Misattribution (percent of judged flows) over time, one line per method.
fn timeline_chart(buckets: &[TimeBucket], legacy: &str) -> String {
    let (w, h, pad) = (720.0, 260.0, 40.0);
    let mut svg = format!(
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="misattribution over time">"#
    );
    let share = |b: &TimeBucket, wrong: u64| {
        if b.judged == 0 {
            0.0
        } else {
            100.0 * wrong as f64 / b.judged as f64
        }
    };
    let max = buckets
        .iter()
        .map(|b| share(b, b.legacy_wrong).max(share(b, b.heartbeat_wrong)))
        .fold(1.0_f64, f64::max)
        .ceil();
    let n = buckets.len().max(2) as f64 - 1.0;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / n;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / max;
    let _ = write!(
        svg,
        r##"<line x1="{pad}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#444"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{y0}" stroke="#444"/><text x="4" y="{pad}" font-size="11">{max:.0}%</text><text x="4" y="{y0}" font-size="11">0%</text><text x="{pad}" y="{yl}" font-size="11">0</text><text x="{xm}" y="{yl}" font-size="11">time since the first flow →</text><text x="{xe}" y="{yl}" font-size="11">{span}</text>"##,
        y0 = h - pad,
        x1 = w - pad,
        yl = h - 20.0,
        xm = w / 2.0 - 70.0,
        xe = w - pad - 40.0,
        span = span_label(buckets),
    );
    for (colour, label, pick) in [
        (
            HEARTBEAT_COLOUR,
            "heartbeat",
            (|b: &TimeBucket| b.heartbeat_wrong) as fn(&TimeBucket) -> u64,
        ),
        (LEGACY_COLOUR, legacy, |b: &TimeBucket| b.legacy_wrong),
    ] {
        let points: Vec<String> = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{:.1},{:.1}", x(i), y(share(b, pick(b)))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="4" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            esc(label)
        );
    }
    let _ = write!(
        svg,
        r#"<rect x="{a}" y="8" width="14" height="14" fill="{HEARTBEAT_COLOUR}"/><text x="{b}" y="20" font-size="12">heartbeat</text><rect x="{c}" y="8" width="14" height="14" fill="{LEGACY_COLOUR}"/><text x="{d}" y="20" font-size="12">{}</text></svg>"#,
        esc(legacy),
        a = w - 260.0,
        b = w - 242.0,
        c = w - 160.0,
        d = w - 142.0,
    );
    svg
}

/// Right and wrong edges per method, as stacked bars.
fn edges_chart(methods: &[(&str, &str, &MethodReport)], focus: Option<&str>) -> String {
    let (w, row, pad) = (760.0, 34.0, 250.0);
    let rows: Vec<(String, &str, crate::EdgeCounts)> = methods
        .iter()
        .flat_map(|(name, colour, m)| {
            let mut v = vec![(format!("{name}: all edges"), *colour, m.edges)];
            if let (Some(f), Some(e)) = (focus, m.focus_edges) {
                v.push((format!("{name}: {f} edges"), *colour, e));
            }
            v
        })
        .collect();
    let max = rows
        .iter()
        .map(|r| r.2.right + r.2.wrong)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let h = row * rows.len() as f64 + 30.0;
    let mut svg = format!(
        r#"<svg id="edges" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="dependency edges right and wrong">"#
    );
    for (i, (label, colour, e)) in rows.iter().enumerate() {
        let top = 6.0 + row * i as f64;
        let scale = (w - pad - 170.0) / max;
        let right = e.right as f64 * scale;
        let wrong = e.wrong as f64 * scale;
        let _ = write!(
            svg,
            r#"<rect x="0" y="{top}" width="8" height="22" fill="{colour}"/><text x="14" y="{ty}" font-size="12">{}</text><rect x="{pad}" y="{top}" width="{right:.1}" height="22" fill="{RIGHT_COLOUR}"><title>right: {}</title></rect><rect x="{wx:.1}" y="{top}" width="{wrong:.1}" height="22" fill="{WRONG_COLOUR}"><title>wrong: {}</title></rect><text x="{tx:.1}" y="{ty}" font-size="12">{} right, {} wrong</text>"#,
            esc(label),
            e.right,
            e.wrong,
            e.right,
            e.wrong,
            ty = top + 16.0,
            wx = pad + right,
            tx = pad + right + wrong + 6.0,
        );
    }
    let _ = write!(
        svg,
        r#"<rect x="{pad}" y="{ly}" width="12" height="12" fill="{RIGHT_COLOUR}"/><text x="{a}" y="{lt}" font-size="12">right</text><rect x="{b}" y="{ly}" width="12" height="12" fill="{WRONG_COLOUR}"/><text x="{c}" y="{lt}" font-size="12">wrong</text></svg>"#,
        ly = h - 20.0,
        lt = h - 10.0,
        a = pad + 16.0,
        b = pad + 70.0,
        c = pad + 86.0,
    );
    svg
}

/// A table with `head` and one row of cells per item.
fn table<T>(head: &[&str], rows: &[T], cells: impl Fn(&T) -> Vec<String>) -> String {
    let mut out = String::from("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for r in rows {
        out.push_str("<tr>");
        for c in cells(r) {
            let _ = write!(out, "<td>{}</td>", esc(&c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// A method's heading, marked with its colour.
fn heading(what: &str, name: &str, colour: &str) -> String {
    format!(
        r#"<h3><span class="key" style="background:{colour}"></span>{}, {}</h3>"#,
        esc(what),
        esc(name)
    )
}

impl Report {
    /// Per method, the heartbeat method first: flows by attribution path,
    /// misattributed flows, wrong and missed edges.
    fn details_html(&self) -> String {
        let colours = [HEARTBEAT_COLOUR, LEGACY_COLOUR];
        let methods = self.methods();
        let mut body = String::from("<h2>Attribution paths</h2>");
        for ((name, m), colour) in methods.iter().zip(colours) {
            body.push_str(&heading("Flows by path", name, colour));
            body.push_str(&table(
                &["path", "attributed", "judged", "misattributed"],
                &m.by_path,
                |p| {
                    vec![
                        p.path.clone(),
                        p.attributed.to_string(),
                        p.judged.to_string(),
                        p.misattributed.to_string(),
                    ]
                },
            ));
        }
        body.push_str("<h2>Misattributed flows</h2>");
        for ((name, m), colour) in methods.iter().zip(colours) {
            body.push_str(&heading("Misattributed flows", name, colour));
            if m.misattributed_examples.is_empty() {
                body.push_str("<p>None.</p>");
                continue;
            }
            let _ = write!(
                body,
                "<p>The first {} of {}.</p>",
                m.misattributed_examples.len(),
                m.misattributed
            );
            body.push_str(&table(
                &[
                    "path",
                    "start (s)",
                    "local",
                    "local endpoint",
                    "remote",
                    "answer",
                    "truth",
                ],
                &m.misattributed_examples,
                |e| {
                    vec![
                        e.path.clone(),
                        (e.start_ns / 1_000_000_000).to_string(),
                        e.local.clone(),
                        e.local_endpoint.clone().unwrap_or_else(|| "-".to_owned()),
                        e.remote.clone(),
                        e.answer.clone(),
                        e.truth.clone(),
                    ]
                },
            ));
        }
        body.push_str("<h2>Wrong and missed edges</h2>");
        for ((name, m), colour) in methods.iter().zip(colours) {
            body.push_str(&heading("Wrong edges", name, colour));
            if m.wrong_edges.is_empty() {
                body.push_str("<p>None.</p>");
            } else {
                body.push_str(&table(
                    &["source", "destination", "flows"],
                    &m.wrong_edges,
                    |e| vec![e.source.clone(), e.destination.clone(), e.flows.to_string()],
                ));
            }
            body.push_str(&heading("Missed edges", name, colour));
            if m.missed_edges.is_empty() {
                body.push_str("<p>None.</p>");
            } else {
                let _ = write!(
                    body,
                    "<p>Real dependencies no flow made: {} in all.</p>",
                    m.edges.missed
                );
                body.push_str(&table(&["source", "destination"], &m.missed_edges, |e| {
                    vec![e.source.clone(), e.destination.clone()]
                }));
            }
        }
        body
    }

    /// The report as a self-contained HTML page.
    pub fn html(&self, title: &str) -> String {
        let legacy = self.legacy_plugin.as_str();
        let methods = [
            ("heartbeat", HEARTBEAT_COLOUR, &self.heartbeat),
            (legacy, LEGACY_COLOUR, &self.legacy),
        ];
        let mut body = String::new();
        let _ = write!(
            body,
            "<h1>{}</h1><p>{} flows compared; ground truth knew the owner of {}.</p>",
            esc(title),
            self.flows,
            self.judged
        );
        let _ = write!(
            body,
            "<h2>Misattribution over time (% of judged flows)</h2>{}",
            timeline_chart(&self.timeline, legacy)
        );
        let _ = write!(
            body,
            "<h2>Dependency edges</h2>{}",
            edges_chart(&methods, self.focus.as_deref())
        );
        body.push_str("<h2>Summary</h2><pre>");
        body.push_str(&esc(&self.summary()));
        body.push_str("</pre>");
        body.push_str(&self.details_html());
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>body{{font-family:sans-serif;margin:2em;max-width:60em}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}td,th{{padding:2px 10px;text-align:left}}.key{{display:inline-block;width:12px;height:12px;margin-right:8px}}</style></head><body>{body}</body></html>\n",
            esc(title)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_axis_names_the_span() {
        let at = |m: u64| TimeBucket {
            start_ns: m * 60_000_000_000,
            judged: 1,
            heartbeat_wrong: 0,
            legacy_wrong: 0,
        };
        assert_eq!(span_label(&[at(0), at(150)]), "2h 30m");
        assert_eq!(span_label(&[at(10), at(55)]), "45m");
        assert_eq!(span_label(&[at(10)]), "0s");
        assert_eq!(span_label(&[]), "0s");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_page_lists_each_methods_wrong_flows_paths_and_missed_edges() {
        let page = crate::sample::report().html("A/B <test>");
        let hb = page
            .find("Misattributed flows, heartbeat</h3>")
            .expect(&page);
        let legacy = page
            .find("Misattributed flows, sonar-legacy</h3>")
            .expect(&page);
        assert!(hb < legacy);
        assert!(
            page[hb..legacy].contains("<td>heartbeat</td><td>110</td><td>gw-1</td><td>10.1.0.1:5000</td><td>10.0.0.7:443</td><td>batch-7</td><td>api-1</td>"),
            "{page}"
        );
        assert!(
            page.contains("<tr><td>resolver:sonar-legacy</td><td>1</td><td>1</td><td>0</td></tr>")
        );
        let missed = page.find("Missed edges, heartbeat</h3>").expect(&page);
        assert!(page[missed..].starts_with(
            "Missed edges, heartbeat</h3><p>Real dependencies no flow made: 2 in all.</p><table><tr><th>source</th><th>destination</th></tr><tr><td>gateway</td><td>auth</td></tr>"
        ), "{page}");
        assert!(page.contains("<title>A/B &lt;test&gt;</title>"));
    }

    #[test]
    fn the_page_stays_self_contained_and_balanced() {
        let page = crate::sample::report().html("t");
        for tag in ["table", "tr", "td", "th", "h2", "h3", "p", "svg", "pre"] {
            let open = page.matches(&format!("<{tag}>")).count()
                + page.matches(&format!("<{tag} ")).count();
            let close = page.matches(&format!("</{tag}>")).count();
            assert_eq!(open, close, "<{tag}>");
        }
        for fetched in ["<script", "src=", "href=", "<link", "url("] {
            assert!(!page.contains(fetched), "{fetched}");
        }
    }
}
