//! Settings shared by every backend: TTL validation and the duration syntax of URLs (`10s`,
//! `500ms`, `2m`).

use std::time::Duration;

use crate::LockError;

/// The longest session TTL accepted: one day.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks a TTL or timeout: at least `min`, at most [`MAX_TTL`]. The error names `setting`.
///
/// ```
/// use std::time::Duration;
/// use distlock_core::validate_ttl;
///
/// assert!(validate_ttl("ttl", Duration::from_secs(10), Duration::from_secs(1)).is_ok());
/// let err = validate_ttl("ttl", Duration::ZERO, Duration::from_secs(1)).unwrap_err();
/// assert!(err.to_string().contains("at least 1s"));
/// ```
pub fn validate_ttl(setting: &str, ttl: Duration, min: Duration) -> Result<Duration, LockError> {
    if ttl < min {
        return Err(LockError::invalid_config(setting, format!("{ttl:?} is too short: use at least {min:?}")));
    }
    if ttl > MAX_TTL {
        return Err(LockError::invalid_config(setting, format!("{ttl:?} is too long: use at most 24h")));
    }
    Ok(ttl)
}

/// Parses a duration written as a whole number with a unit: `ms`, `s`, `m` or `h`
/// (`500ms`, `10s`, `2m`). The error names `setting` and shows the accepted forms.
///
/// ```
/// use std::time::Duration;
/// use distlock_core::parse_duration;
///
/// assert_eq!(parse_duration("ttl", "10s")?, Duration::from_secs(10));
/// assert_eq!(parse_duration("ttl", "250ms")?, Duration::from_millis(250));
/// assert!(parse_duration("ttl", "10").is_err()); // a unit is required
/// # Ok::<(), distlock_core::LockError>(())
/// ```
pub fn parse_duration(setting: &str, text: &str) -> Result<Duration, LockError> {
    let bad = |why: &str| {
        LockError::invalid_config(
            setting,
            format!("{text:?} is not a duration ({why}); write it like 500ms, 10s, 2m or 1h"),
        )
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| bad("no unit"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(bad("no number"));
    }
    let value: u64 = number.parse().map_err(|_| bad("number too large"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad("unknown unit")),
    };
    let millis = value.checked_mul(millis_per_unit).ok_or_else(|| bad("too large"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok: &[(&str, u64)] =
            &[("0ms", 0), ("1ms", 1), ("10s", 10_000), ("2m", 120_000), ("1h", 3_600_000), (" 3s ", 3_000)];
        for (text, millis) in ok {
            assert_eq!(parse_duration("x", text).unwrap(), Duration::from_millis(*millis), "{text}");
        }
        for text in ["", "s", "10", "10 s", "1.5s", "-1s", "10d", "99999999999999999999s", "18446744073709551615h"] {
            let err = parse_duration("ttl", text).unwrap_err().to_string();
            assert!(err.contains("`ttl`") && err.contains("500ms"), "{text}: {err}");
        }
    }

    #[test]
    fn ttl_bounds() {
        let min = Duration::from_secs(1);
        assert!(validate_ttl("ttl", Duration::ZERO, min).is_err());
        assert!(validate_ttl("ttl", Duration::from_millis(999), min).is_err());
        assert!(validate_ttl("ttl", min, min).is_ok());
        assert!(validate_ttl("ttl", MAX_TTL, min).is_ok());
        assert!(validate_ttl("ttl", MAX_TTL + Duration::from_secs(1), min).is_err());
    }
}
