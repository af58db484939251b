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
/// Wrong edges' bars.
pub const WRONG_COLOUR: &str = "#c0392b";
/// Right edges' bars.
pub const RIGHT_COLOUR: &str = "#7fb3d5";
/// Missed edges' bars.
pub const MISSED_COLOUR: &str = "#e6b800";
/// The frame around the timeline's plot area (tests find the area by it;
/// the legend is outside).
pub const TIMELINE_FRAME: &str = "#5b6f8a";
/// The frame around the edge bars.
pub const EDGES_FRAME: &str = "#8a5b6f";

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
    // Positioned by time, so a stretch without judged flows is a gap.
    let first = buckets.first().map_or(0, |b| b.start_ns);
    let span = buckets.last().map_or(0, |b| b.start_ns - first).max(1) as f64;
    let x = |b: &TimeBucket| pad + (w - 2.0 * pad) * (b.start_ns - first) as f64 / span;
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
    let _ = write!(
        svg,
        r#"<rect x="{pad}" y="{pad}" width="{pw}" height="{ph}" fill="none" stroke="{TIMELINE_FRAME}" stroke-width="2" shape-rendering="crispEdges"/>"#,
        pw = w - 2.0 * pad,
        ph = h - 2.0 * pad,
    );
    // The heartbeat line on top and narrower, so it shows where both agree.
    for (colour, label, width, pick) in [
        (
            LEGACY_COLOUR,
            legacy,
            6,
            (|b: &TimeBucket| b.legacy_wrong) as fn(&TimeBucket) -> u64,
        ),
        (HEARTBEAT_COLOUR, "heartbeat", 3, |b: &TimeBucket| {
            b.heartbeat_wrong
        }),
    ] {
        let points: Vec<String> = buckets
            .iter()
            .map(|b| format!("{:.1},{:.1}", x(b), y(share(b, pick(b)))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{}"><title>{}</title></polyline>"#,
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

/// Right, wrong and missed edges per method, as stacked bars.
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
        .map(|r| r.2.right + r.2.wrong + r.2.missed)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let h = row * rows.len() as f64 + 40.0;
    let mut svg = format!(
        r#"<svg id="edges" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="dependency edges right, wrong and missed">"#
    );
    let _ = write!(
        svg,
        r#"<rect x="{fx}" y="2" width="{fw}" height="{fh}" fill="none" stroke="{EDGES_FRAME}" stroke-width="2" shape-rendering="crispEdges"/>"#,
        fx = pad - 4.0,
        fw = w - pad + 2.0,
        fh = row * rows.len() as f64 + 4.0,
    );
    for (i, (label, colour, e)) in rows.iter().enumerate() {
        let top = 6.0 + row * i as f64;
        let scale = (w - pad - 170.0) / max;
        let right = e.right as f64 * scale;
        let wrong = e.wrong as f64 * scale;
        let missed = e.missed as f64 * scale;
        let _ = write!(
            svg,
            r#"<rect x="0" y="{top}" width="8" height="22" fill="{colour}"/><text x="14" y="{ty}" font-size="12">{}</text><rect x="{pad}" y="{top}" width="{right:.1}" height="22" fill="{RIGHT_COLOUR}"><title>right: {}</title></rect><rect x="{wx:.1}" y="{top}" width="{wrong:.1}" height="22" fill="{WRONG_COLOUR}"><title>wrong: {}</title></rect><rect x="{mx:.1}" y="{top}" width="{missed:.1}" height="22" fill="{MISSED_COLOUR}"><title>missed: {}</title></rect><text x="{tx:.1}" y="{ty}" font-size="12">{} right, {} wrong, {} missed</text>"#,
            esc(label),
            e.right,
            e.wrong,
            e.missed,
            e.right,
            e.wrong,
            e.missed,
            ty = top + 16.0,
            wx = pad + right,
            mx = pad + right + wrong,
            tx = pad + right + wrong + missed + 6.0,
        );
    }
    let _ = write!(
        svg,
        r#"<rect x="{pad}" y="{ly}" width="12" height="12" fill="{RIGHT_COLOUR}"/><text x="{a}" y="{lt}" font-size="12">right</text><rect x="{b}" y="{ly}" width="12" height="12" fill="{WRONG_COLOUR}"/><text x="{c}" y="{lt}" font-size="12">wrong</text><rect x="{d}" y="{ly}" width="12" height="12" fill="{MISSED_COLOUR}"/><text x="{e}" y="{lt}" font-size="12">missed (real dependencies no flow showed)</text></svg>"#,
        ly = h - 20.0,
        lt = h - 10.0,
        a = pad + 16.0,
        b = pad + 70.0,
        c = pad + 86.0,
        d = pad + 140.0,
        e = pad + 156.0,
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

/// One summary card: a big figure and what it counts.
fn card(colour: &str, figure: &str, what: &str) -> String {
    format!(
        r#"<div class="card" style="border-color:{colour}"><div class="figure">{}</div><div>{}</div></div>"#,
        esc(figure),
        esc(what)
    )
}

impl Report {
    /// The headline per method: misattributed flows, wrong edges (of the
    /// focus service where there is one), unattributed flows.
    fn cards_html(&self) -> String {
        let mut out = String::new();
        for ((name, m), colour) in self.methods().iter().zip([HEARTBEAT_COLOUR, LEGACY_COLOUR]) {
            out.push_str(r#"<div class="cards">"#);
            let edges = m.focus_edges.unwrap_or(m.edges);
            let whose = self
                .focus
                .as_deref()
                .map_or(String::new(), |f| format!("{f} "));
            out.push_str(&card(
                colour,
                &format!("{:.2}%", m.misattributed_pct),
                &format!(
                    "{name}: flows misattributed ({} of {})",
                    m.misattributed, m.judged
                ),
            ));
            out.push_str(&card(
                colour,
                &format!("{} of {}", edges.wrong, edges.total),
                &format!(
                    "{name}: {whose}dependency edges wrong ({} missed)",
                    edges.missed
                ),
            ));
            out.push_str(&card(
                colour,
                &m.unattributed.to_string(),
                &format!(
                    "{name}: flows unattributed ({} not ambiguous)",
                    m.unattributed_unambiguous
                ),
            ));
            out.push_str("</div>");
        }
        out
    }

    /// Both methods side by side, how often they agree, and examples of
    /// disagreement.
    fn summary_html(&self) -> String {
        let [(hb, _), (legacy, _)] = self.methods();
        let mut out = String::from("<h2>Side by side</h2>");
        out.push_str(&table(
            &["", hb, legacy],
            &self.summary_rows(),
            |(label, cells)| {
                // A detail row is indented under the row it details.
                let label = match label.strip_prefix("  ") {
                    Some(detail) => format!("\u{a0}\u{a0}\u{a0}\u{a0}{detail}"),
                    None => label.clone(),
                };
                vec![label, cells[0].clone(), cells[1].clone()]
            },
        ));
        let a = &self.agreement;
        out.push_str("<h2>Agreement</h2>");
        let rows = [
            ("same workload", a.same_workload),
            ("different workloads", a.different_workloads),
            ("heartbeat only", a.heartbeat_only),
            (&format!("{legacy} only") as &str, a.legacy_only),
            ("neither", a.neither),
        ];
        out.push_str(&table(&["answers", "flows"], &rows, |(what, n)| {
            vec![what.to_string(), n.to_string()]
        }));
        if !self.disagreements.is_empty() {
            out.push_str("<h3>Examples of disagreement</h3>");
            out.push_str(&table(
                &["start (s)", "local", "remote", "heartbeat", legacy, "truth"],
                &self.disagreements,
                |d| {
                    vec![
                        (d.start_ns / 1_000_000_000).to_string(),
                        d.local.clone(),
                        d.remote.clone(),
                        d.heartbeat.clone(),
                        d.legacy.clone(),
                        d.truth.clone().unwrap_or_else(|| "?".to_owned()),
                    ]
                },
            ));
        }
        out
    }

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
        body.push_str(&self.cards_html());
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
        body.push_str(&self.summary_html());
        body.push_str(&self.details_html());
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>body{{font-family:sans-serif;margin:2em;max-width:60em}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}table{{border-collapse:collapse;margin:0.5em 0}}td,th{{padding:3px 10px;text-align:left;border-bottom:1px solid #ddd}}th{{background:#f0f0f0}}.cards{{display:flex;gap:12px;margin-bottom:12px}}.card{{flex:1 1 0;border-left:6px solid;padding:8px 14px;background:#fafafa}}.figure{{font-size:1.8em;font-weight:bold}}.key{{display:inline-block;width:12px;height:12px;margin-right:8px}}</style></head><body>{body}</body></html>\n",
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
