//! Device import from the factory's records: CSV (header `thing_name,vendor,sku`, columns found by
//! name, extra columns ignored) or JSON Lines (`{"thing_name", "vendor", "sku"}` per line), of any
//! size. Rows are read as a stream and imported a chunk at a time, each device in its own
//! transaction through [`ClaimService::import`], which never touches ownership. Running the same
//! file again changes nothing, so an interrupted import resumes by running it again.
//!
//! Optional columns `code` (a label code distinct from the ThingName, hashed with the label code
//! key at once; needs `--code-key-secret`) and `allow_thing_name` (`true`/`false`: may the device
//! also be claimed by its ThingName; default false for a device with a code).
//!
//! Rows that cannot be imported go to a failure report: CSV with the input's columns plus `line`
//! and `reason`, which can be fixed and imported as it is. The report never contains a label code:
//! a failed row that had one is written with the `code` column blank, `allow_thing_name` `false`
//! and the reason saying so; such a row imports again only once its code is
//! copied back from the input (`allow_thing_name: false` without a code is refused), so a device
//! never loses its code by way of the report.

use std::{
    io::{BufRead, Write},
    path::Path,
};

use claim_shared::{
    domain::{history::Actor, label_code::LabelCodeKey, registry::NewDevice},
    ports::OwnershipStore,
    service::{ClaimService, Clock, DeviceOpError, ImportOutcome},
};
use futures::{stream, StreamExt};
use serde::Deserialize;

/// One input row as written (before validation).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RawRow {
    #[serde(default)]
    pub thing_name: String,
    #[serde(default)]
    pub vendor: String,
    #[serde(default)]
    pub sku: Option<String>,
    /// A label code distinct from the ThingName. Never written anywhere (the report leaves it out).
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub allow_thing_name: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// From the file name: `.jsonl`/`.ndjson` are JSON Lines, everything else CSV.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|ext| ext.to_str()) {
            Some("jsonl" | "ndjson") => Self::JsonLines,
            _ => Self::Csv,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {0}")]
    Read(String),
    #[error("cannot write the failure report: {0}")]
    Report(String),
    #[error("the ownership table is unavailable: {0}")]
    Store(String),
}

/// A row the import refused or could not store, with its 1-based line in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: u64,
    pub row: RawRow,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
}

/// Checks one row (hashing its label code with `key`); the reason names the field, so the row can
/// be fixed, and never contains the code.
pub fn validate(row: &RawRow, key: Option<&LabelCodeKey>) -> Result<NewDevice, String> {
    NewDevice::parse(&row.thing_name, &row.vendor, row.sku.as_deref())?.with_label_code(
        row.code.as_deref(),
        row.allow_thing_name,
        key,
    )
}

/// Reads rows lazily; a row that cannot even be parsed comes back as a [`Failure`].
// A failure carries the row (for the report); rows are handled a chunk at a time, so its size
// does not matter.
#[allow(clippy::result_large_err)]
pub fn read_rows(
    input: Box<dyn BufRead + Send>,
    format: Format,
) -> Box<dyn Iterator<Item = Result<(u64, RawRow), Failure>> + Send> {
    match format {
        Format::Csv => {
            let reader = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .flexible(true)
                .from_reader(input);
            Box::new(reader.into_deserialize::<RawRow>().enumerate().map(|(index, row)| {
                // Line 1 is the header.
                let line = index as u64 + 2;
                row.map(|row| (line, row)).map_err(|err| Failure {
                    line,
                    row: RawRow::default(),
                    reason: format!("not a valid CSV row: {err}"),
                })
            }))
        }
        Format::JsonLines => Box::new(
            input
                .lines()
                .enumerate()
                .map(|(index, line)| (index as u64 + 1, line))
                .filter(|(_, line)| line.as_ref().map_or(true, |text| !text.trim().is_empty()))
                .map(|(line, text)| {
                    let text = text.map_err(|err| Failure {
                        line,
                        row: RawRow::default(),
                        reason: format!("unreadable line: {err}"),
                    })?;
                    json_row(&text).map(|row| (line, row)).map_err(|reason| Failure {
                        line,
                        row: RawRow::default(),
                        reason,
                    })
                }),
        ),
    }
}

/// How many rows [`read_rows`] yields for this input, counted without parsing them (the total
/// of the progress bar).
pub fn count_rows(input: impl BufRead, format: Format) -> std::io::Result<u64> {
    let mut rows = 0;
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
            let mut record = csv::ByteRecord::new();
            while reader.read_byte_record(&mut record)? {
                rows += 1;
            }
        }
        Format::JsonLines => {
            for line in input.split(b'\n') {
                if !String::from_utf8_lossy(&line?).trim().is_empty() {
                    rows += 1;
                }
            }
        }
    }
    Ok(rows)
}

/// One JSON Lines row. The code is taken out before the row is read into its type: serde's type
/// errors quote the refused value, which must never reach the report.
fn json_row(text: &str) -> Result<RawRow, String> {
    const NOT_A_ROW: &str = "not a JSON object with thing_name, vendor, sku";
    // Syntax errors name a position, never a value; a duplicate key is refused (read one way here,
    // another way by whatever else reads the file).
    let mut fields = match claim_shared::json::from_slice_strict(text.as_bytes()) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => return Err(NOT_A_ROW.to_owned()),
        Err(err) => return Err(format!("{NOT_A_ROW}: {err}")),
    };
    let code = match fields.remove("code") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(code)) => Some(code),
        Some(_) => return Err("code must be a string".to_owned()),
    };
    let row = serde_json::from_value::<RawRow>(serde_json::Value::Object(fields))
        .map_err(|err| format!("{NOT_A_ROW}: {err}"))?;
    Ok(RawRow { code, ..row })
}

/// The failure report, written as failures happen.
pub struct Report<W: Write> {
    writer: csv::Writer<W>,
}

impl<W: Write> Report<W> {
    pub fn new(out: W) -> Result<Self, ImportError> {
        let mut writer = csv::Writer::from_writer(out);
        writer
            .write_record([
                "thing_name",
                "vendor",
                "sku",
                "code",
                "allow_thing_name",
                "line",
                "reason",
            ])
            .map_err(|err| ImportError::Report(err.to_string()))?;
        Ok(Self { writer })
    }

    pub fn add(&mut self, failure: &Failure) -> Result<(), ImportError> {
        let line = failure.line.to_string();
        let had_code = failure.row.code.as_deref().is_some_and(|code| !code.is_empty());
        // The code stays out of the report; without it the row is refused until it is put back.
        let (allow, reason) = if had_code {
            // Always `false`: the row is refused until its code is back (a `true` of the input is
            // named in the reason), so a report never imports a device without its code.
            let was_allowed = if failure.row.allow_thing_name == Some(true) {
                " (and allow_thing_name, which was true)"
            } else {
                ""
            };
            (
                "false",
                format!(
                    "{}; code: left out of this report, copy it back from line {} of the input{was_allowed}",
                    failure.reason, failure.line
                ),
            )
        } else {
            (
                match failure.row.allow_thing_name {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "",
                },
                failure.reason.clone(),
            )
        };
        self.writer
            .write_record([
                failure.row.thing_name.as_str(),
                failure.row.vendor.as_str(),
                failure.row.sku.as_deref().unwrap_or(""),
                "",
                allow,
                line.as_str(),
                reason.as_str(),
            ])
            .and_then(|()| self.writer.flush().map_err(csv::Error::from))
            .map_err(|err| ImportError::Report(err.to_string()))
    }
}

pub struct Importer<'a, S, C> {
    pub service: &'a ClaimService<S, C>,
    pub operator: String,
    /// Devices imported at the same time.
    pub concurrency: usize,
    /// Rows read before their imports are awaited.
    pub chunk: usize,
}

impl<S: OwnershipStore, C: Clock> Importer<'_, S, C> {
    /// Imports every row; `progress` is called after each chunk with the running summary. Stops
    /// early only when the table is unavailable (rows done so far stay done; run again to resume).
    pub async fn run<W: Write>(
        &self,
        rows: impl Iterator<Item = Result<(u64, RawRow), Failure>>,
        report: &mut Report<W>,
        mut progress: impl FnMut(&Summary),
    ) -> Result<Summary, ImportError> {
        let mut summary = Summary::default();
        let mut rows = rows.peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(self.chunk.max(1)).collect();
            let results: Vec<_> = stream::iter(chunk)
                .map(|row| self.import_one(row))
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
            let mut store_error = None;
            for result in results {
                summary.rows += 1;
                match result {
                    Ok(ImportOutcome::Created) => summary.created += 1,
                    Ok(ImportOutcome::Updated) => summary.updated += 1,
                    Ok(ImportOutcome::Unchanged) => summary.unchanged += 1,
                    Err(RowError::Rejected(failure)) => {
                        summary.failed += 1;
                        report.add(&failure)?;
                    }
                    Err(RowError::Store(failure, detail)) => {
                        summary.failed += 1;
                        report.add(&failure)?;
                        store_error = Some(detail);
                    }
                }
            }
            progress(&summary);
            if let Some(detail) = store_error {
                return Err(ImportError::Store(detail));
            }
        }
        Ok(summary)
    }

    async fn import_one(&self, row: Result<(u64, RawRow), Failure>) -> Result<ImportOutcome, RowError> {
        let (line, row) = row.map_err(RowError::Rejected)?;
        let failure = |reason: String| Failure {
            line,
            row: row.clone(),
            reason,
        };
        let device =
            validate(&row, self.service.label_code_key()).map_err(|reason| RowError::Rejected(failure(reason)))?;
        match self
            .service
            .import(&device, Actor::Operator(self.operator.clone()))
            .await
        {
            Ok(outcome) => Ok(outcome),
            Err(DeviceOpError::Store(err)) => {
                let detail = err.to_string();
                Err(RowError::Store(failure(format!("not stored: {detail}")), detail))
            }
            Err(err @ DeviceOpError::CodeInUse) => Err(RowError::Rejected(failure(err.to_string()))),
            Err(err) => Err(RowError::Rejected(failure(format!(
                "not stored: {err}; import it again"
            )))),
        }
    }
}

enum RowError {
    Rejected(Failure),
    Store(Failure, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_rows(text: &str) -> Vec<Result<(u64, RawRow), Failure>> {
        read_rows(Box::new(std::io::Cursor::new(text.to_owned())), Format::Csv).collect()
    }

    #[test]
    fn csv_columns_are_found_by_name_and_extra_columns_ignored() {
        let rows = csv_rows("sku,vendor,thing_name,reason\nS1,acme,dev-1,old reason\n,acme,dev-2,\n");
        let rows: Vec<_> = rows.into_iter().map(|row| row.map_err(|f| f.reason)).collect();
        assert_eq!(
            rows,
            vec![
                Ok((
                    2,
                    RawRow {
                        thing_name: "dev-1".into(),
                        vendor: "acme".into(),
                        sku: Some("S1".into()),
                        ..RawRow::default()
                    }
                )),
                Ok((
                    3,
                    RawRow {
                        thing_name: "dev-2".into(),
                        vendor: "acme".into(),
                        sku: None,
                        ..RawRow::default()
                    }
                )),
            ]
        );
    }

    #[test]
    fn json_lines_skip_blank_lines_and_report_bad_ones_with_their_line() {
        let text = "{\"thing_name\":\"a\",\"vendor\":\"v\"}\n\nnot json\n";
        let rows: Vec<_> = read_rows(Box::new(std::io::Cursor::new(text)), Format::JsonLines).collect();
        assert_eq!(rows.len(), 2);
        assert!(matches!(&rows[0], Ok((1, row)) if row.thing_name == "a"));
        assert!(matches!(&rows[1], Err(failure) if failure.line == 3));
    }

    #[test]
    fn a_json_line_with_a_duplicate_key_is_refused_without_its_values() {
        let text =
            "{\"thing_name\":\"dev-1\",\"vendor\":\"acme\",\"code\":\"LBL-SECRET-1\",\"code\":\"LBL-SECRET-2\"}\n";
        let rows: Vec<_> = read_rows(Box::new(std::io::Cursor::new(text)), Format::JsonLines).collect();
        match rows.as_slice() {
            [Err(failure)] => {
                assert!(failure.reason.contains("duplicate key"), "{}", failure.reason);
                assert!(!failure.reason.contains("SECRET"), "{}", failure.reason);
            }
            other => panic!("expected one refused row, got {other:?}"),
        }
    }

    #[test]
    fn a_code_that_is_not_a_string_is_refused_without_its_value() {
        let secret = "98765432101234";
        let text = [
            format!("{{\"thing_name\":\"a\",\"vendor\":\"v\",\"code\":{secret}}}"),
            format!("{{\"thing_name\":\"a\",\"vendor\":\"v\",\"code\":[\"{secret}\"]}}"),
            format!("{{\"thing_name\":\"a\",\"vendor\":\"v\",\"code\":{{\"value\":\"{secret}\"}}}}"),
            format!("\"{secret}\""),
            format!("{{\"thing_name\":\"a\",\"vendor\":\"v\",\"code\":\"{secret}\",\"sku\":7}}"),
        ]
        .join("\n");
        let rows: Vec<_> = read_rows(Box::new(std::io::Cursor::new(text)), Format::JsonLines).collect();
        let failures: Vec<Failure> = rows.into_iter().filter_map(Result::err).collect();
        assert_eq!(failures.len(), 5);
        for failure in &failures[..3] {
            assert_eq!(failure.reason, "code must be a string");
        }
        let mut out = Vec::new();
        {
            let mut report = Report::new(&mut out).unwrap();
            for failure in &failures {
                report.add(failure).unwrap();
            }
        }
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(secret), "{text}");
        assert!(
            text.contains("integer `7`"),
            "other fields' errors still say what is wrong: {text}"
        );
        // A code given as a string still reads.
        let good = "{\"thing_name\":\"a\",\"vendor\":\"v\",\"code\":\"C-1\",\"allow_thing_name\":true}";
        let rows: Vec<_> = read_rows(Box::new(std::io::Cursor::new(good)), Format::JsonLines).collect();
        assert!(
            matches!(&rows[..], [Ok((1, row))] if row.code.as_deref() == Some("C-1") && row.allow_thing_name == Some(true))
        );
    }

    #[test]
    fn rows_are_counted_as_they_are_read() {
        let inputs = [
            (
                Format::Csv,
                "thing_name,vendor,sku\na,v,\"two\nlines\"\n\nb,v\n bad row \n",
            ),
            (
                Format::JsonLines,
                "{\"thing_name\":\"a\"}\n\n  \r\nnot json\n{\"thing_name\":\"b\"}",
            ),
        ];
        for (format, text) in inputs {
            let counted = count_rows(std::io::Cursor::new(text), format).unwrap();
            let read = read_rows(Box::new(std::io::Cursor::new(text)), format).count();
            assert_eq!((counted, read), (3, 3), "{format:?}");
        }
    }

    fn validate_row(row: &RawRow) -> Result<NewDevice, String> {
        validate(row, None)
    }

    #[test]
    fn validation_names_the_bad_field() {
        let row = |thing: &str, vendor: &str, sku: Option<&str>| RawRow {
            thing_name: thing.into(),
            vendor: vendor.into(),
            sku: sku.map(Into::into),
            ..RawRow::default()
        };
        assert!(validate_row(&row("dev-1", "acme", Some("S1"))).is_ok());
        assert!(validate_row(&row("dev/1", "acme", None))
            .unwrap_err()
            .starts_with("thing_name"));
        assert!(validate_row(&row("dev-1", "", None)).unwrap_err().starts_with("vendor"));
        assert!(validate_row(&row("dev-1", "a c", None))
            .unwrap_err()
            .starts_with("vendor"));
        assert!(validate_row(&row("dev-1", "acme", Some(&"x".repeat(65))))
            .unwrap_err()
            .starts_with("sku"));
        assert_eq!(validate_row(&row("dev-1", "acme", Some(""))).map(|d| d.sku), Ok(None));
    }

    #[test]
    fn the_report_is_csv_that_imports_again() {
        let mut out = Vec::new();
        {
            let mut report = Report::new(&mut out).unwrap();
            report
                .add(&Failure {
                    line: 7,
                    row: RawRow {
                        thing_name: "bad/name".into(),
                        vendor: "acme".into(),
                        sku: Some("S, with comma".into()),
                        ..RawRow::default()
                    },
                    reason: "thing_name: bad".into(),
                })
                .unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let again = csv_rows(&text);
        assert!(
            matches!(&again[0], Ok((2, row)) if row.thing_name == "bad/name" && row.sku.as_deref() == Some("S, with comma"))
        );
    }

    proptest::proptest! {
        /// Any file, either format: every row is read or reported with its line, nothing panics,
        /// and the count agrees with the rows read.
        #[test]
        fn any_input_reads_as_rows_or_failures(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), csv in proptest::prelude::any::<bool>()) {
            let format = if csv { Format::Csv } else { Format::JsonLines };
            let rows: Vec<_> = read_rows(Box::new(std::io::Cursor::new(bytes.clone())), format).collect();
            for row in &rows {
                if let Err(failure) = row {
                    proptest::prop_assert!(failure.line >= 1);
                }
            }
            let _ = count_rows(std::io::Cursor::new(bytes), format);
        }
    }
}
