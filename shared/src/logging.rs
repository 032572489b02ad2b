//! The functions' logs as CloudWatch reads them: one flat JSON object per event on stdout, with
//! `timestamp` (RFC 3339) and `level` at the top, so Lambda's JSON log format recognises each line
//! and its `ApplicationLogLevel` filter keeps the errors (a line without a valid `timestamp` counts
//! as INFO and is dropped at `WARN`). The event's own fields (`event`, `outcome`, `claim_id`,
//! `latency_ms`, …) and those of the spans it happened in (the Lambda runtime's `requestId` and
//! `xrayTraceId`) are top-level members too, so Logs Insights queries name them directly. Field
//! dictionary: `docs/operations.md`, "Log fields".

use json_subscriber::JsonLayer;
use tracing::Subscriber;
use tracing_subscriber::{
    filter::LevelFilter,
    fmt::{time::SystemTime, MakeWriter},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
    Layer,
};

/// Installs the JSON logger for this process, at the stack's `LogLevel` (`LOG_LEVEL`), else the
/// level Lambda filters at (`AWS_LAMBDA_LOG_LEVEL`, from `ApplicationLogLevel`), else `RUST_LOG`
/// when it is a plain level, else INFO.
///
/// The template leaves Lambda's own filter open (`ApplicationLogLevel: TRACE`) and filters here:
/// metric documents carry no `level`, so Lambda counts them as INFO, and a filter at WARN in
/// Lambda would drop every metric and silence the alarms. Filtering in the process keeps them.
pub fn init() {
    let level = level_from(
        std::env::var("LOG_LEVEL")
            .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL"))
            .or_else(|_| std::env::var("RUST_LOG"))
            .ok()
            .as_deref(),
    );
    // A second call (tests) keeps the first logger.
    let _ = tracing_subscriber::registry()
        .with(json_layer(std::io::stdout).with_filter(level))
        .try_init();
}

/// The JSON layer writing to `writer` (tests capture the real format with it).
pub fn json_layer<S, W>(writer: W) -> JsonLayer<S, W>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    let mut layer = JsonLayer::new(writer);
    layer.with_timer("timestamp", SystemTime);
    layer.with_level("level");
    layer.with_target("target");
    layer.with_flattened_event();
    layer.with_top_level_flattened_span_list();
    layer
}

fn level_from(raw: Option<&str>) -> LevelFilter {
    match raw.map(|raw| raw.trim().to_ascii_lowercase()).as_deref() {
        Some("trace") => LevelFilter::TRACE,
        Some("debug") => LevelFilter::DEBUG,
        Some("warn") => LevelFilter::WARN,
        Some("error" | "fatal") => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_flat_json_with_timestamp_level_and_the_span_fields() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("Lambda runtime invoke", requestId = "req-1");
            let _entered = span.enter();
            tracing::warn!(event = "claim_decision", outcome = "busy", latency_ms = 7u64);
        });
        let text = String::from_utf8(lines.0.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
        assert_eq!(line["level"], "WARN", "{text}");
        assert_eq!(line["event"], "claim_decision", "{text}");
        assert_eq!(line["outcome"], "busy", "{text}");
        assert_eq!(line["latency_ms"], 7, "{text}");
        assert_eq!(line["requestId"], "req-1", "{text}");
        assert!(line.get("fields").is_none() && line.get("span").is_none(), "{text}");
        let timestamp = line["timestamp"].as_str().unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339).is_ok(),
            "{text}"
        );
    }

    #[test]
    fn the_level_comes_from_lambda_then_rust_log() {
        assert_eq!(level_from(Some("WARN")), LevelFilter::WARN);
        assert_eq!(level_from(Some("error")), LevelFilter::ERROR);
        assert_eq!(level_from(Some("claim_api=debug")), LevelFilter::INFO);
        assert_eq!(level_from(None), LevelFilter::INFO);
    }
}
