//! Import progress on stderr: on a terminal a bar redrawn in place (rows done of the total,
//! percentage, rate, time left); elsewhere a plain line per chunk, which logs, CI and the tests
//! read.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use crate::import::Summary;

/// Columns of the bar itself; the whole line stays within 80 for inputs of millions of rows.
const BAR_WIDTH: u64 = 16;

enum Mode {
    Lines,
    /// Towards a total of rows (`None`: not known, rows and rate only).
    Bar(Option<u64>),
}

pub struct Progress {
    mode: Mode,
    started: Instant,
}

impl Progress {
    /// Plain lines, one per chunk.
    pub fn lines() -> Self {
        Self {
            mode: Mode::Lines,
            started: Instant::now(),
        }
    }

    /// A bar towards `total` rows (`None`: not known, rows and rate only).
    pub fn bar(total: Option<u64>) -> Self {
        Self {
            mode: Mode::Bar(total),
            started: Instant::now(),
        }
    }

    /// Draws the empty bar, so a person sees the total before the first chunk is in (lines
    /// start with the first chunk).
    pub fn start(&self) {
        if matches!(self.mode, Mode::Bar(_)) {
            self.update(&Summary::default());
        }
    }

    pub fn update(&self, summary: &Summary) {
        let mut err = std::io::stderr().lock();
        // Progress is a courtesy: a closed or full stderr must not stop the import.
        let _ = match self.mode {
            // `\r` back to the line's start, `ESC[K` clears what a longer line left.
            Mode::Bar(total) => {
                write!(err, "\r{}\x1b[K", bar_line(summary, total, self.started.elapsed())).and_then(|()| err.flush())
            }
            Mode::Lines => writeln!(err, "{}", plain_line(summary)),
        };
    }

    /// Ends the bar's line, so whatever is printed next starts on a line of its own.
    pub fn finish(&self) {
        if matches!(self.mode, Mode::Bar(_)) {
            eprintln!();
        }
    }
}

pub fn plain_line(s: &Summary) -> String {
    format!(
        "  {} rows: {} created, {} updated, {} unchanged, {} failed",
        s.rows, s.created, s.updated, s.unchanged, s.failed
    )
}

/// `[#######---------] 2300/5000  46.0%  412 rows/s  ETA 0:07  3 failed`
pub fn bar_line(s: &Summary, total: Option<u64>, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { s.rows as f64 / seconds } else { 0.0 };
    let (rate_text, failed) = (format!("{rate:.0} rows/s"), format!("{} failed", s.failed));
    let Some(total) = total.filter(|total| *total > 0) else {
        return format!("{} rows  {rate_text}  {failed}", s.rows);
    };
    // Counted up front: a file changed since can run past its total.
    let done = s.rows.min(total);
    let filled = done * BAR_WIDTH / total;
    let eta = if rate > 0.0 {
        clock((total - done) as f64 / rate)
    } else {
        "-".to_owned()
    };
    format!(
        "[{}{}] {done}/{total} {:5.1}%  {rate_text}  ETA {eta}  {failed}",
        "#".repeat(filled as usize),
        "-".repeat((BAR_WIDTH - filled) as usize),
        // Rounded down: 100.0% only once every row is done.
        (done as f64 * 1000.0 / total as f64).floor() / 10.0,
    )
}

/// `0:07`, `12:30`, `1:02:03`.
fn clock(seconds: f64) -> String {
    let total = seconds.ceil() as u64;
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rows: u64, failed: u64) -> Summary {
        Summary {
            rows,
            created: rows - failed,
            failed,
            ..Summary::default()
        }
    }

    #[test]
    fn the_bar_shows_rows_of_the_total_percentage_rate_and_time_left() {
        assert_eq!(
            bar_line(&summary(2500, 3), Some(5000), Duration::from_secs(10)),
            "[########--------] 2500/5000  50.0%  250 rows/s  ETA 0:10  3 failed"
        );
        assert_eq!(
            bar_line(&summary(5000, 0), Some(5000), Duration::from_secs(4000)),
            "[################] 5000/5000 100.0%  1 rows/s  ETA 0:00  0 failed"
        );
        assert_eq!(
            bar_line(&summary(0, 0), Some(5000), Duration::ZERO),
            "[----------------] 0/5000   0.0%  0 rows/s  ETA -  0 failed"
        );
        assert!(bar_line(&summary(2999, 0), Some(3000), Duration::from_secs(1)).contains(" 99.9% "));
        // More rows than counted (the file grew): full, never past it.
        assert!(bar_line(&summary(6000, 0), Some(5000), Duration::from_secs(1))
            .starts_with("[################] 5000/5000 100.0%"));
        // No total: rows and rate only.
        assert_eq!(
            bar_line(&summary(500, 0), None, Duration::from_secs(2)),
            "500 rows  250 rows/s  0 failed"
        );
    }

    #[test]
    fn time_left_reads_as_a_clock() {
        assert_eq!(clock(7.2), "0:08");
        assert_eq!(clock(750.0), "12:30");
        assert_eq!(clock(3723.0), "1:02:03");
    }

    #[test]
    fn plain_lines_stay_as_logs_and_tests_read_them() {
        assert_eq!(
            plain_line(&summary(500, 2)),
            "  500 rows: 498 created, 0 updated, 0 unchanged, 2 failed"
        );
    }
}
