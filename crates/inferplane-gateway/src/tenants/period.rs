//! Budget periods as pure arithmetic on a time given in milliseconds since the Unix
//! epoch: which UTC day or calendar month `now` falls in, and how long until the next.
//! The month comes from the day number by the civil-from-days formula (Howard Hinnant,
//! "chrono-Compatible Low-Level Date Algorithms", public domain).

use crate::config::BudgetPeriod;

const DAY_MS: u64 = 86_400_000;

/// The budget period `now_ms` falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Its number: days, or months, since the epoch (distinct per kind by `tag`).
    pub id: u64,
    /// Milliseconds until the next one starts.
    pub reset_ms: u64,
    /// Its name in store keys: `d<days>` or `m<months>`.
    pub tag: char,
}

impl Period {
    /// Its store key suffix, as `d20425` or `m671`.
    pub fn key_suffix(&self) -> String {
        format!("{}{}", self.tag, self.id)
    }
}

/// The year and month (1-12) of day `days` since 1970-01-01.
fn civil(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

/// Day number (since 1970-01-01) of the first of `month` (1-12) in `year`.
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The period of `period` that `now_ms` falls in, `None` for a budget for all time.
pub fn period_of(period: Option<BudgetPeriod>, now_ms: u64) -> Option<Period> {
    let day = now_ms / DAY_MS;
    match period? {
        BudgetPeriod::Day => Some(Period {
            id: day,
            reset_ms: (day + 1) * DAY_MS - now_ms,
            tag: 'd',
        }),
        BudgetPeriod::Month => {
            let (year, month) = civil(day);
            let (ny, nm) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            Some(Period {
                id: (year - 1970) * 12 + (month - 1),
                reset_ms: days_from_civil(ny, nm) * DAY_MS - now_ms,
                tag: 'm',
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03T15:00:00Z.
    const NOW: u64 = 1_796_310_000_000;

    #[test]
    fn a_day_runs_to_utc_midnight() {
        let p = period_of(Some(BudgetPeriod::Day), NOW).unwrap();
        assert_eq!(p.reset_ms, 9 * 3_600_000);
        assert_eq!(p.key_suffix(), format!("d{}", NOW / DAY_MS));
        let next = period_of(Some(BudgetPeriod::Day), NOW + p.reset_ms).unwrap();
        assert_eq!(next.id, p.id + 1);
        assert_eq!(next.reset_ms, DAY_MS);
        assert_eq!(period_of(None, NOW), None);
    }

    #[test]
    fn a_month_runs_to_the_first_of_the_next_across_years_and_leap_days() {
        // December 2026: 28 days and 9 hours to 2027-01-01
        let p = period_of(Some(BudgetPeriod::Month), NOW).unwrap();
        assert_eq!(p.id, (2026 - 1970) * 12 + 11);
        assert_eq!(p.reset_ms, (28 * 24 + 9) * 3_600_000);
        let jan = period_of(Some(BudgetPeriod::Month), NOW + p.reset_ms).unwrap();
        assert_eq!(jan.id, p.id + 1);
        assert_eq!(jan.reset_ms, 31 * DAY_MS);
        // 2028-02-01 (a leap year): 29 days to March
        let feb = days_from_civil(2028, 2) * DAY_MS;
        let f = period_of(Some(BudgetPeriod::Month), feb).unwrap();
        assert_eq!(f.reset_ms, 29 * DAY_MS);
        assert_eq!(civil(days_from_civil(2028, 2)), (2028, 2));
        // every month start of four centuries round-trips
        for y in 1971..2371 {
            for m in 1..=12 {
                assert_eq!(civil(days_from_civil(y, m)), (y, m));
                assert_eq!(
                    civil(days_from_civil(y, m) - 1).1,
                    if m == 1 { 12 } else { m - 1 }
                );
            }
        }
    }
}
