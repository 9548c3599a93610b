//! Times as operators read them: RFC 3339 in UTC.
//!
//! humantime's formatter fails (an `fmt::Error`, or a panic before the Unix epoch) for a time
//! it cannot write, and `to_string`, `format!` and serde_json all panic on such an error.
//! Times signet shows can come from a state file an operator edited or restored, or from
//! another server's admin answer, so every time shown goes through [`rfc3339`], which writes
//! a time outside RFC 3339's years as the bound it passed instead of failing.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z.
const LAST_SECOND: u64 = 253_402_300_799;

/// Whether `at` can be written in RFC 3339 (between the Unix epoch and the end of year 9999).
pub fn in_rfc3339_range(at: SystemTime) -> bool {
    at.duration_since(UNIX_EPOCH)
        .is_ok_and(|since| since.as_secs() <= LAST_SECOND)
}

/// `at` in RFC 3339 to the second (`2026-12-05T15:16:24Z`); a time outside the range is
/// written `1970-01-01T00:00:00Z or earlier` or `9999-12-31T23:59:59Z or later`.
pub fn rfc3339(at: SystemTime) -> Rfc3339 {
    Rfc3339(at)
}

/// See [`rfc3339`].
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if in_rfc3339_range(self.0) {
            fmt::Display::fmt(&humantime::format_rfc3339_seconds(self.0), f)
        } else if self.0 < UNIX_EPOCH {
            f.write_str("1970-01-01T00:00:00Z or earlier")
        } else {
            f.write_str("9999-12-31T23:59:59Z or later")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_inside_the_range_are_written_to_the_second() {
        let at = UNIX_EPOCH + Duration::new(1_764_947_784, 999_999_999);
        assert_eq!(rfc3339(at).to_string(), "2025-12-05T15:16:24Z");
        assert_eq!(rfc3339(UNIX_EPOCH).to_string(), "1970-01-01T00:00:00Z");
        let last = UNIX_EPOCH + Duration::new(LAST_SECOND, 999_999_999);
        assert!(in_rfc3339_range(last));
        assert_eq!(rfc3339(last).to_string(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn times_outside_the_range_are_written_as_the_bound_they_passed() {
        let after = UNIX_EPOCH + Duration::from_secs(LAST_SECOND + 1);
        assert!(!in_rfc3339_range(after));
        assert_eq!(rfc3339(after).to_string(), "9999-12-31T23:59:59Z or later");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert!(!in_rfc3339_range(before));
        assert_eq!(
            rfc3339(before).to_string(),
            "1970-01-01T00:00:00Z or earlier"
        );
        // As callers use it: inside a message.
        assert_eq!(
            format!("removal due at {}", rfc3339(after)),
            "removal due at 9999-12-31T23:59:59Z or later"
        );
    }
}
