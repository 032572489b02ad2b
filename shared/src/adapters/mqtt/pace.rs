//! When a connection's next publish may go out. AWS IoT Core allows 100 publishes per second per
//! connection (not adjustable; how strictly it counts is not published), so two rules hold at once:
//!
//! - **A grid** of [`PUBLISH_INTERVAL`]: one publish per slot, and a wake-up a little late does not
//!   push every later publish back (counting from each send instead held a busy connection at
//!   84–90 a second on a loaded machine). A slot missed altogether is skipped, not made up for, and
//!   two publishes are never closer than half an interval.
//! - **A sliding window**: a publish never goes out within [`WINDOW`] of the one
//!   [`PER_WINDOW`] before it. The grid alone allowed 101 in a sliding second where a late slot
//!   was followed by one half an interval later; with the window no second holds more than 100,
//!   wherever it starts, and the margin leaves room for the way to the broker to jitter.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use super::PUBLISH_INTERVAL;

/// Publishes in any [`WINDOW`] at most: AWS IoT Core's per-connection quota.
pub const PER_WINDOW: usize = 100;

/// A second, and half an interval for the jitter between here and the broker.
pub const WINDOW: Duration = Duration::from_millis(1005);

/// One connection's pace.
#[derive(Debug)]
pub struct Pace {
    /// The next slot on the grid.
    slot: Instant,
    /// When the last [`PER_WINDOW`] publishes went out, oldest first.
    recent: VecDeque<Instant>,
}

impl Pace {
    pub fn new(now: Instant) -> Self {
        Self {
            slot: now,
            recent: VecDeque::with_capacity(PER_WINDOW),
        }
    }

    /// The earliest time the next publish may go out.
    pub fn next(&self) -> Instant {
        match self.recent.front() {
            Some(oldest) if self.recent.len() >= PER_WINDOW => self.slot.max(*oldest + WINDOW),
            _ => self.slot,
        }
    }

    /// A publish went out at `now` (not before [`Self::next`]).
    pub fn sent(&mut self, now: Instant) {
        self.slot = next_slot(self.slot, now);
        if self.recent.len() >= PER_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
    }
}

/// The slot after a publish sent at `now` that was due at `slot`: on the grid from `slot`, the
/// first one after `now`, and at least half an interval after `now`.
fn next_slot(slot: Instant, now: Instant) -> Instant {
    let behind = now.saturating_duration_since(slot).as_nanos();
    let interval = PUBLISH_INTERVAL.as_nanos().max(1);
    let slots = u32::try_from(behind / interval + 1).unwrap_or(u32::MAX);
    (slot + PUBLISH_INTERVAL * slots).max(now + PUBLISH_INTERVAL / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes sent by a sender that wakes `late(i)` after each allowed time, from `start`.
    fn sent_times(start: Instant, late: impl Fn(usize) -> Duration, count: usize) -> Vec<Instant> {
        let mut pace = Pace::new(start);
        (0..count)
            .map(|i| {
                let sent = pace.next() + late(i);
                pace.sent(sent);
                sent
            })
            .collect()
    }

    /// The most publishes in any window of `window`, wherever it starts.
    fn most_within(times: &[Instant], window: Duration) -> usize {
        times
            .iter()
            .map(|from| times.iter().filter(|t| **t >= *from && **t < *from + window).count())
            .max()
            .unwrap_or_default()
    }

    #[test]
    fn a_sender_that_wakes_a_little_late_keeps_the_full_rate_without_drifting() {
        let start = Instant::now();
        let times = sent_times(start, |_| Duration::from_micros(1500), 1000);
        let per_second = 999.0 / (times[999] - times[0]).as_secs_f64();
        assert!(
            (99.0..=100.0).contains(&per_second),
            "no drift below 99 a second: {per_second}"
        );
        assert!(most_within(&times, WINDOW) <= PER_WINDOW);
    }

    #[test]
    fn late_and_missed_slots_never_put_more_than_100_in_any_second() {
        let start = Instant::now();
        // Every seventh wake-up comes 9 ms late (just short of missing its slot), every 23rd 35 ms
        // (slots missed): the pattern that let the grid alone put 101 in a sliding second.
        let late = |i: usize| match (i % 23, i % 7) {
            (0, _) => Duration::from_millis(35),
            (_, 0) => Duration::from_millis(9),
            _ => Duration::ZERO,
        };
        let times = sent_times(start, late, 2000);
        assert!(most_within(&times, Duration::from_secs(1)) <= 100);
        assert!(most_within(&times, WINDOW) <= PER_WINDOW);
        let gaps: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
        assert!(
            gaps.iter().all(|gap| *gap >= PUBLISH_INTERVAL / 2),
            "never closer than half an interval"
        );
        let per_second = 1999.0 / (times[1999] - times[0]).as_secs_f64();
        // About 4 slots of every 23 publishes are missed: 23 in 265 ms, 87 a second at best.
        assert!(per_second > 80.0, "only the missed slots are lost: {per_second}");
    }

    #[test]
    fn the_grid_alone_could_put_101_in_a_second() {
        // What the window is for: the grid's own bound, without the window.
        let start = Instant::now();
        let mut slot = start;
        let times: Vec<Instant> = (0..300)
            .map(|i| {
                let sent = slot + Duration::from_millis(if i == 0 { 9 } else { 0 });
                slot = next_slot(slot, sent);
                sent
            })
            .collect();
        assert_eq!(most_within(&times, Duration::from_secs(1)), 101);
        let paced = sent_times(start, |i| Duration::from_millis(if i == 0 { 9 } else { 0 }), 300);
        assert_eq!(most_within(&paced, Duration::from_secs(1)), 100);
    }

    #[test]
    fn a_missed_slot_is_skipped_not_made_up_for() {
        let start = Instant::now();
        let times = sent_times(start, |i| Duration::from_millis(if i == 4 { 35 } else { 0 }), 50);
        // After the late one, back on the grid of 10 ms from the start.
        assert_eq!((times[10] - start).as_millis() % 10, 0);
        assert!(times[5] - times[4] >= PUBLISH_INTERVAL / 2);
    }

    #[test]
    fn after_an_idle_connection_the_next_publish_keeps_half_an_interval_from_the_last() {
        let idle_since = Instant::now();
        let mut pace = Pace::new(idle_since);
        pace.sent(idle_since);
        let now = idle_since + Duration::from_millis(2_003);
        pace.sent(now);
        assert!(pace.next() >= now + PUBLISH_INTERVAL / 2);
        assert!(pace.next() <= now + PUBLISH_INTERVAL);
    }
}
