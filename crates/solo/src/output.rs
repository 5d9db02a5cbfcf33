//! How the CLI shows things: tables and lines for people, JSON for programs, a spinner
//! on stderr for anything slow, and one line on failure.

use std::time::Duration;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Prints the failure of a command: one line on stderr, or with `--json` one JSON
/// document on stdout (the shape REST answers with).
pub fn fail(e: &anyhow::Error, as_json: bool) {
    if as_json {
        json(&serde_json::to_value(crate::cli::failure_of(e)).unwrap_or_default());
        return;
    }
    // `{:#}` joins the causes with ": " on one line.
    let line = format!("{e:#}").replace('\n', " ");
    eprintln!("error: {line}");
}

/// Prints a JSON value on one line.
pub fn json_line(v: &Value) {
    println!("{v}");
}

/// Prints a JSON value, pretty.
pub fn json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A table with a header row.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    println!("{t}");
}

/// `key: value` lines, aligned.
pub fn fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

/// A spinner on stderr (drawn only on a terminal) while something slow happens.
pub fn spinner(message: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        pb.set_style(style);
    }
    pb.set_message(message.into());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// UTC nanoseconds as RFC 3339 with milliseconds.
pub fn time(ns: i64) -> String {
    if ns == 0 {
        return "-".into();
    }
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_else(|_| ns.to_string())
}

/// A duration in milliseconds, for people.
pub fn millis(ms: u64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms if ms < 3_600_000 => format!("{}m{}s", ms / 60_000, (ms / 1000) % 60),
        ms => format!("{}h{}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// Bytes, for people.
pub fn bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n => format!("{:.1} GiB", n as f64 / f64::from(1 << 30)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_000_000_000_123_000_000), "2001-09-09T01:46:40.123Z");
        assert_eq!(millis(1500), "1.5s");
        assert_eq!(millis(61_000), "1m1s");
        assert_eq!(bytes(2048), "2.0 KiB");
    }
}
