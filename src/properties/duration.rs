//! Durations (`cli::parse_duration`, behind `--timeout`, `--heartbeat` and the others): any
//! text is read or refused without a panic, a duration too long for the clock is refused, and
//! what pgnotify or a person writes reads back.

use super::{config, wild_string};
use crate::cli::parse_duration;
use proptest::prelude::*;
use std::time::Duration;

/// `1h 2m 3s 4ms`, each unit only when it is not zero.
fn spelled(d: Duration) -> String {
    let ms = d.as_millis();
    let parts = [
        (ms / 3_600_000, "h"),
        (ms / 60_000 % 60, "m"),
        (ms / 1000 % 60, "s"),
        (ms % 1000, "ms"),
    ];
    let words: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    words.join(" ")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_read_or_refused_without_a_panic(s in wild_string(32)) {
        if let Ok(d) = parse_duration(&s) {
            prop_assert!(d > Duration::ZERO);
        }
    }

    #[test]
    fn numbers_with_units_never_panic(
        n in prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "[0-9]{1,40}", "-?[0-9]{1,25}\\.[0-9]{1,12}"],
        unit in proptest::sample::select(&["ns", "us", "ms", "s", "m", "h", "d", "w", "mo", "y", "", "x"][..]),
    ) {
        if let Ok(d) = parse_duration(&format!("{n}{unit}")) {
            prop_assert!(d > Duration::ZERO);
        }
    }

    #[test]
    fn written_durations_read_back(ms in 1..(400u64 * 24 * 3_600_000)) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&spelled(d)), Ok(d), "{}", spelled(d));
        prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(d));
        let friendly = format!("{:#}", jiff::SignedDuration::try_from(d).unwrap_or_default());
        prop_assert_eq!(parse_duration(&friendly), Ok(d), "{}", friendly);
        prop_assert_eq!(parse_duration(&format!("  {}\t", spelled(d))), Ok(d));
    }

    #[test]
    fn zero_and_negative_are_refused(n in 0..1_000_000u64, unit in proptest::sample::select(&["ms", "s", "m", "h"][..])) {
        let (negative, zero) = (format!("-{}{unit}", n + 1), format!("0{unit}"));
        prop_assert!(parse_duration(&negative).is_err());
        prop_assert!(parse_duration(&zero).is_err());
    }
}

/// The longest duration jiff reads is i64::MAX seconds; anything longer is refused, not
/// wrapped or saturated.
#[test]
fn a_duration_past_the_clock_is_refused() {
    let max = i64::MAX;
    assert!(parse_duration(&format!("{max}s")).is_ok());
    for s in [
        format!("{}s", i128::from(max) + 1),
        format!("{}h", u64::MAX),
        "99999999999999999999999999999999h".to_owned(),
        format!("{max}s 1s"),
    ] {
        assert!(parse_duration(&s).is_err(), "{s}");
    }
}
