//! What a test run spent its time on, from the JUnit file nextest writes
//! (`[profile.default.junit]` in `.config/nextest.toml`): the slowest tests by name, and per
//! test binary the tests' summed time and the wall time from its first start to its last end.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use quick_xml::events::Event;

/// One test case of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// The test binary, as nextest names it (`meerkat-tests::multidc`).
    pub binary: String,
    pub name: String,
    /// Seconds the test took.
    pub secs: f64,
    /// Seconds from the run's start to the test's start.
    pub started: f64,
    pub failed: bool,
}

/// A test binary's share of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Binary {
    pub name: String,
    pub tests: usize,
    /// The tests' times added up.
    pub total: f64,
    /// From its first test's start to its last test's end.
    pub wall: f64,
}

/// The cases of a nextest JUnit file.
pub fn read(path: &Path) -> anyhow::Result<Vec<Case>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The cases of a nextest JUnit document: `<testsuite name=binary>` holding
/// `<testcase name time timestamp>`, with a `<failure>` or `<error>` child when it failed.
pub fn parse(xml: &str) -> anyhow::Result<Vec<Case>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut suite = String::new();
    let mut cases: Vec<(Case, Option<String>)> = Vec::new();
    let mut in_case = false;
    loop {
        match reader.read_event().context("reading XML")? {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testsuite" => {
                suite = attr(&e, b"name")?.unwrap_or_default();
            }
            Event::Start(e) if e.name().as_ref() == b"testcase" => {
                cases.push(case(&e, &suite)?);
                in_case = true;
            }
            Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                cases.push(case(&e, &suite)?);
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => in_case = false,
            Event::Start(e) | Event::Empty(e)
                if in_case && matches!(e.name().as_ref(), b"failure" | b"error") =>
            {
                if let Some((c, _)) = cases.last_mut() {
                    c.failed = true;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    // Start times relative to the earliest one, from the RFC 3339 timestamps.
    let epoch: Vec<Option<f64>> = cases
        .iter()
        .map(|(_, ts)| ts.as_deref().and_then(epoch_seconds))
        .collect();
    let first = epoch
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    Ok(cases
        .into_iter()
        .zip(epoch)
        .map(|((mut c, _), at)| {
            c.started = at.map_or(0.0, |t| (t - first).max(0.0));
            c
        })
        .collect())
}

fn case(e: &quick_xml::events::BytesStart, suite: &str) -> anyhow::Result<(Case, Option<String>)> {
    let name = attr(e, b"name")?.unwrap_or_default();
    let secs = attr(e, b"time")?
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok((
        Case {
            binary: suite.to_owned(),
            name,
            secs,
            started: 0.0,
            failed: false,
        },
        attr(e, b"timestamp")?,
    ))
}

fn attr(e: &quick_xml::events::BytesStart, key: &[u8]) -> anyhow::Result<Option<String>> {
    for a in e.attributes() {
        let a = a.context("XML attribute")?;
        if a.key.as_ref() == key {
            return Ok(Some(
                a.unescape_value().context("XML attribute")?.into_owned(),
            ));
        }
    }
    Ok(None)
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp.
fn epoch_seconds(ts: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(t.timestamp_millis() as f64 / 1000.0)
}

/// Per test binary, slowest total first.
pub fn binaries(cases: &[Case]) -> Vec<Binary> {
    let mut by: BTreeMap<&str, Vec<&Case>> = BTreeMap::new();
    for c in cases {
        by.entry(&c.binary).or_default().push(c);
    }
    let mut out: Vec<Binary> = by
        .into_iter()
        .map(|(name, cs)| {
            let start = cs.iter().map(|c| c.started).fold(f64::INFINITY, f64::min);
            let end = cs.iter().map(|c| c.started + c.secs).fold(0.0, f64::max);
            Binary {
                name: name.to_owned(),
                tests: cs.len(),
                total: cs.iter().map(|c| c.secs).sum(),
                wall: (end - start).max(0.0),
            }
        })
        .collect();
    out.sort_by(|a, b| b.total.total_cmp(&a.total));
    out
}

/// The report `cargo xtask test` prints at the end.
pub fn report(cases: &[Case], slowest: usize) -> String {
    let mut out = String::new();
    let mut by_time: Vec<&Case> = cases.iter().collect();
    by_time.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    out.push_str(&format!("The {slowest} slowest tests:\n"));
    for c in by_time.iter().take(slowest) {
        let mark = if c.failed { "  FAILED" } else { "" };
        out.push_str(&format!(
            "  {:7.1}s  {} {}{mark}\n",
            c.secs, c.binary, c.name
        ));
    }
    out.push_str("Per test binary (tests, summed time, wall time):\n");
    for b in binaries(cases) {
        out.push_str(&format!(
            "  {:4} {:8.1}s {:8.1}s  {}\n",
            b.tests, b.total, b.wall, b.name
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="4" failures="1" time="40.0">
    <testsuite name="router" tests="1">
        <testcase name="a::fast" classname="router" timestamp="2026-12-05T01:30:04.000+00:00" time="0.005"/>
    </testsuite>
    <testsuite name="meerkat-tests::multidc" tests="3">
        <testcase name="chat::x" classname="meerkat-tests::multidc" timestamp="2026-12-05T01:30:10.000+00:00" time="20.5"/>
        <testcase name="chat::y" classname="meerkat-tests::multidc" timestamp="2026-12-05T01:30:30.500+00:00" time="5.0">
            <failure type="test failure">boom &amp; more</failure>
        </testcase>
        <testcase name="&lt;odd&gt;" classname="meerkat-tests::multidc" timestamp="2026-12-05T01:30:36.000+00:00" time="1.0"></testcase>
    </testsuite>
</testsuites>"#;

    #[test]
    fn cases_come_with_their_binary_time_start_and_failure() {
        let cases = parse(RUN).unwrap();
        assert_eq!(cases.len(), 4);
        assert_eq!(cases[0].binary, "router");
        assert_eq!(cases[0].started, 0.0);
        assert_eq!(cases[1].name, "chat::x");
        assert!((cases[1].started - 6.0).abs() < 1e-6);
        assert!(!cases[1].failed);
        assert!(cases[2].failed);
        assert_eq!(cases[3].name, "<odd>");
        assert!(!cases[3].failed);
    }

    #[test]
    fn binaries_add_up_and_measure_their_wall_time() {
        let b = binaries(&parse(RUN).unwrap());
        assert_eq!(b[0].name, "meerkat-tests::multidc");
        assert_eq!(b[0].tests, 3);
        assert!((b[0].total - 26.5).abs() < 1e-6);
        // 01:30:10 to 01:30:37.
        assert!((b[0].wall - 27.0).abs() < 1e-6);
        assert_eq!(b[1].name, "router");
    }

    #[test]
    fn the_report_names_the_slowest_first_and_marks_failures() {
        let text = report(&parse(RUN).unwrap(), 2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "The 2 slowest tests:");
        assert!(
            lines[1].contains("meerkat-tests::multidc chat::x"),
            "{text}"
        );
        assert!(lines[2].ends_with("chat::y  FAILED"), "{text}");
        assert!(!text.contains("a::fast"), "{text}");
        assert!(
            text.contains("3     26.5s     27.0s  meerkat-tests::multidc"),
            "{text}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse("<testsuites><testsuite name='x'><testcase name='a' time='1'").is_err());
        assert!(parse("<a></b>").is_err());
    }

    #[test]
    fn timestamps_order_across_midnight_and_offsets() {
        let a = epoch_seconds("2026-11-30T23:59:59.500+00:00").unwrap();
        let b = epoch_seconds("2026-12-01T00:00:01Z").unwrap();
        assert!((b - a - 1.5).abs() < 1e-6);
        let c = epoch_seconds("2026-12-01T01:00:01+01:00").unwrap();
        assert!((c - b).abs() < 1e-6);
    }
}
