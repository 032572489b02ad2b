//! Import progress on stderr: on a terminal an `indicatif` bar redrawn in place (rows done of the
//! total, percentage, rate, time left, failures); elsewhere a plain line per chunk, which logs, CI
//! and the tests read.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::import::Summary;

/// `[#######---------] 2300/5000  46%  412 rows/s  ETA 7s  3 failed`, within 80 columns for
/// millions of rows.
const WITH_TOTAL: &str = "[{bar:16}] {pos}/{len} {percent:>3}%  {per_sec}  ETA {eta}  {msg}";
/// Without a total (a pipe): rows and rate only.
const WITHOUT_TOTAL: &str = "{pos} rows  {per_sec}  {msg}";

pub struct Progress {
    /// `None`: plain lines.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Plain lines, one per chunk.
    pub fn lines() -> Self {
        Self { bar: None }
    }

    /// A bar towards `total` rows (`None`: not known, rows and rate only).
    pub fn bar(total: Option<u64>) -> Self {
        Self::bar_to(total, ProgressDrawTarget::stderr())
    }

    fn bar_to(total: Option<u64>, target: ProgressDrawTarget) -> Self {
        let (bar, template) = match total.filter(|total| *total > 0) {
            Some(total) => (ProgressBar::with_draw_target(Some(total), target), WITH_TOTAL),
            None => (ProgressBar::with_draw_target(None, target), WITHOUT_TOTAL),
        };
        // The templates are constants; a bad one would show the default style, never fail an import.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("#-"));
        }
        Self { bar: Some(bar) }
    }

    /// Draws the empty bar, so a person sees the total before the first chunk is in (lines
    /// start with the first chunk).
    pub fn start(&self) {
        if self.bar.is_some() {
            self.update(&Summary::default());
        }
    }

    pub fn update(&self, summary: &Summary) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{} failed", summary.failed));
                // Counted up front: a file changed since can run past its total; the bar stops full.
                bar.set_position(bar.length().map_or(summary.rows, |total| summary.rows.min(total)));
            }
            // Progress is a courtesy: a closed stderr must not stop the import (eprintln! would panic).
            None => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr().lock(), "{}", plain_line(summary));
            }
        }
    }

    /// Ends the bar's line, so whatever is printed next starts on a line of its own.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

pub fn plain_line(s: &Summary) -> String {
    format!(
        "  {} rows: {} created, {} updated, {} unchanged, {} failed",
        s.rows, s.created, s.updated, s.unchanged, s.failed
    )
}

#[cfg(test)]
mod tests {
    use indicatif::InMemoryTerm;

    use super::*;

    fn summary(rows: u64, failed: u64) -> Summary {
        Summary {
            rows,
            created: rows - failed,
            failed,
            ..Summary::default()
        }
    }

    fn drawn(total: Option<u64>, rows: u64, failed: u64) -> String {
        let term = InMemoryTerm::new(2, 100);
        let progress = Progress::bar_to(total, ProgressDrawTarget::term_like(Box::new(term.clone())));
        progress.update(&summary(rows, failed));
        if let Some(bar) = &progress.bar {
            bar.tick();
        }
        term.contents()
    }

    #[test]
    fn the_bar_shows_rows_of_the_total_percentage_and_failures() {
        let half = drawn(Some(5000), 2500, 3);
        assert!(half.starts_with("[########--------] 2500/5000  50%"), "{half}");
        assert!(half.ends_with("3 failed"), "{half}");
        // More rows than counted (the file grew): full, never past it.
        let over = drawn(Some(5000), 6000, 0);
        assert!(over.starts_with("[################] 5000/5000 100%"), "{over}");
        // No total: rows and rate only.
        let open = drawn(None, 500, 0);
        assert!(open.starts_with("500 rows  ") && open.ends_with("0 failed"), "{open}");
    }

    #[test]
    fn plain_lines_stay_as_logs_and_tests_read_them() {
        assert_eq!(
            plain_line(&summary(500, 2)),
            "  500 rows: 498 created, 0 updated, 0 unchanged, 2 failed"
        );
    }
}
