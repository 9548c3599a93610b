//! What `signet keys list` and `signet keys status` print: an aligned table for people, JSON
//! for scripts. Times are RFC 3339 UTC, to the second.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use super::v1;

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Serialize)]
struct KeyView<'a> {
    kid: &'a str,
    alg: &'a str,
    state: &'static str,
    created_at: Option<String>,
    published_at: Option<String>,
    activated_at: Option<String>,
    retired_at: Option<String>,
    removal_due: Option<String>,
    verify_only: bool,
    exclude_from_oidc_discovery: bool,
}

#[derive(Debug, Serialize)]
struct StatusView<'a> {
    active_kid: Option<&'a str>,
    next_kid: Option<&'a str>,
    next_rotation_at: Option<String>,
    last_error: Option<&'a str>,
    data_timestamp: Option<String>,
}

fn time(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let at = SystemTime::try_from(*ts?).ok()?;
    Some(crate::timestamp::rfc3339(at).to_string())
}

fn state_name(key: &v1::Key) -> &'static str {
    match key.state() {
        v1::KeyState::Next => "next",
        v1::KeyState::Active => "active",
        v1::KeyState::Retired => "retired",
        v1::KeyState::Unspecified => "unknown",
    }
}

fn key_view(key: &v1::Key) -> KeyView<'_> {
    KeyView {
        kid: &key.kid,
        alg: &key.alg,
        state: state_name(key),
        created_at: time(key.created_at.as_ref()),
        published_at: time(key.published_at.as_ref()),
        activated_at: time(key.activated_at.as_ref()),
        retired_at: time(key.retired_at.as_ref()),
        removal_due: time(key.removal_due.as_ref()),
        verify_only: key.verify_only,
        exclude_from_oidc_discovery: key.exclude_from_oidc_discovery,
    }
}

/// The key list, in publication order.
pub fn render_keys(keys: &[v1::Key], format: OutputFormat) -> String {
    let views: Vec<KeyView<'_>> = keys.iter().map(key_view).collect();
    match format {
        OutputFormat::Json => json(&views),
        OutputFormat::Table => {
            let header = [
                "KID",
                "ALG",
                "STATE",
                "CREATED",
                "ACTIVATED",
                "RETIRED",
                "REMOVAL DUE",
                "NOTES",
            ];
            let rows: Vec<[String; 8]> = views
                .iter()
                .map(|v| {
                    let mut notes = Vec::new();
                    if v.verify_only {
                        notes.push("verify-only");
                    }
                    if v.exclude_from_oidc_discovery {
                        notes.push("not in OIDC discovery");
                    }
                    [
                        v.kid.to_owned(),
                        v.alg.to_owned(),
                        v.state.to_owned(),
                        or_dash(&v.created_at),
                        or_dash(&v.activated_at),
                        or_dash(&v.retired_at),
                        or_dash(&v.removal_due),
                        if notes.is_empty() {
                            "-".to_owned()
                        } else {
                            notes.join(", ")
                        },
                    ]
                })
                .collect();
            table(&header, &rows)
        }
    }
}

/// The lifecycle status.
pub fn render_status(status: &v1::StatusResponse, format: OutputFormat) -> String {
    let view = StatusView {
        active_kid: status.active_kid.as_deref(),
        next_kid: status.next_kid.as_deref(),
        next_rotation_at: time(status.next_rotation_at.as_ref()),
        last_error: status.last_error.as_deref(),
        data_timestamp: time(status.data_timestamp.as_ref()),
    };
    match format {
        OutputFormat::Json => json(&view),
        OutputFormat::Table => {
            let lines = [
                ("active key", view.active_kid.unwrap_or("none").to_owned()),
                ("next key", view.next_kid.unwrap_or("none").to_owned()),
                (
                    "next rotation",
                    view.next_rotation_at
                        .unwrap_or_else(|| "automatic rotation disabled".to_owned()),
                ),
                ("keys changed", or_dash(&view.data_timestamp)),
                ("last error", view.last_error.unwrap_or("none").to_owned()),
            ];
            let mut out = String::new();
            for (label, value) in lines {
                let _ = writeln!(out, "{:<15}{value}", format!("{label}:"));
            }
            out
        }
    }
}

fn or_dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}

fn json<T: Serialize>(value: &T) -> String {
    // Serializing plain strings, options and bools cannot fail.
    let mut out = serde_json::to_string_pretty(value).expect("view serializes");
    out.push('\n');
    out
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: [usize; N] = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, state: v1::KeyState) -> v1::Key {
        v1::Key {
            kid: kid.into(),
            alg: "ES256".into(),
            state: state.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn table_aligns_columns_and_marks_missing_times() {
        let out = render_keys(
            &[
                key("short", v1::KeyState::Active),
                key("a-much-longer-kid", v1::KeyState::Next),
            ],
            OutputFormat::Table,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("KID  "), "{out}");
        let alg_col = lines[0].find("ALG").unwrap();
        assert_eq!(lines[1].find("ES256"), Some(alg_col), "{out}");
        assert_eq!(lines[2].find("ES256"), Some(alg_col), "{out}");
        assert!(lines[1].contains("2023-11-14T22:13:20Z"), "{out}");
        assert!(lines[2].contains(" next "), "{out}");
        assert!(lines[2].contains(" - "), "{out}");
    }

    #[test]
    fn json_has_one_object_per_key_with_rfc3339_times() {
        let out = render_keys(&[key("k1", v1::KeyState::Retired)], OutputFormat::Json);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed[0]["kid"], "k1");
        assert_eq!(parsed[0]["state"], "retired");
        assert_eq!(parsed[0]["created_at"], "2023-11-14T22:13:20Z");
        assert!(parsed[0]["activated_at"].is_null());
    }
}
