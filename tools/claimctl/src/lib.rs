//! `claimctl`, the operator command line: the operations that work on the ownership table directly.
pub mod import;
pub mod progress;

/// A duration as operators type it: `90s`, `10m`, `2h`, `7d`.
pub fn parse_age(raw: &str) -> Result<time::Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{raw:?}: a number and a unit, e.g. 90s, 10m, 2h, 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    number
        .checked_mul(seconds)
        .filter(|total| *total <= 3650 * 86_400)
        .map(time::Duration::seconds)
        .ok_or_else(|| format!("{raw:?}: at most 3650 days"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_have_a_number_and_a_unit() {
        assert_eq!(parse_age("90s"), Ok(time::Duration::seconds(90)));
        assert_eq!(parse_age("10m"), Ok(time::Duration::minutes(10)));
        assert_eq!(parse_age("7d"), Ok(time::Duration::days(7)));
        for bad in ["", "10", "m", "10w", "-5m", "99999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }
}
