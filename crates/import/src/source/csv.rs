//! CSV with a header row, UTF-8 or GBK, streamed record by record.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use csv::{ByteRecord, ReaderBuilder};

use super::{record_text, Fail, Next, Raw, SourceRow};
use crate::cell::Cell;
use crate::error::{ImportError, RowError};
use crate::input::{skip_bom, Counting, Decode, Input, Stream};
use crate::mapping::{Encoding, Format, Mapping};
use crate::plan::Plan;

pub(crate) struct CsvSource {
    reader: csv::Reader<Stream>,
    /// For each plan column, its field index in the records.
    index: Vec<usize>,
    /// Header names, trimmed.
    names: Vec<String>,
    width: usize,
    delimiter: u8,
}

impl CsvSource {
    /// Opens the input, settles the encoding and reads the header.
    ///
    /// With `encoding: auto` a file is read once in chunks to check that it is valid UTF-8, then
    /// streamed; GBK is decoded while streaming. Memory use is bounded by the longest record.
    pub(crate) fn open(
        input: &Input,
        mapping: &Mapping,
        plan: &Plan,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, ImportError> {
        let origin = input.origin();
        let encoding = match mapping.encoding {
            Encoding::Auto if input.is_utf8()? => Encoding::Utf8,
            Encoding::Auto => Encoding::Gbk,
            chosen => chosen,
        };
        tracing::debug!(origin = %origin, encoding = ?encoding, "reading csv");
        let stream: Stream = Box::new(Counting::new(input.open()?, counter));
        let text: Stream = match encoding {
            Encoding::Gbk => Box::new(Decode::new(stream, encoding_rs::GBK)),
            _ => skip_bom(stream).map_err(|e| ImportError::io("read", input.path(), e))?,
        };
        let delimiter = u8::try_from(mapping.delimiter.unwrap_or(',')).unwrap_or(b',');
        let mut reader = ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .from_reader(text);
        let header = match reader.byte_headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                return Err(match e.into_kind() {
                    csv::ErrorKind::Io(e) => ImportError::io("read", input.path(), e),
                    other => ImportError::CsvHeader {
                        origin,
                        message: format!("cannot read the header: {other:?}"),
                    },
                })
            }
        };
        let header_error = |message: String| ImportError::CsvHeader {
            origin: origin.clone(),
            message,
        };
        if header.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            return Err(header_error(
                "the file is empty or its first line is blank; the first line must name the \
                 columns"
                    .into(),
            ));
        }
        let mut names = Vec::with_capacity(header.len());
        for field in &header {
            match std::str::from_utf8(field) {
                Ok(name) => names.push(name.trim().to_string()),
                Err(_) => {
                    return Err(header_error(
                        "the header is not valid UTF-8 (set `encoding: gbk` in the mapping)".into(),
                    ))
                }
            }
        }
        let mut index = Vec::with_capacity(plan.columns.len());
        for column in &plan.columns {
            let wanted = column.trim();
            let hits: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| *n == wanted)
                .map(|(i, _)| i)
                .collect();
            match hits.as_slice() {
                [i] => index.push(*i),
                [] => {
                    return Err(ImportError::MissingColumn {
                        origin,
                        format: Format::Csv,
                        column: column.clone(),
                        available: names,
                    })
                }
                _ => {
                    return Err(header_error(format!(
                        "column `{wanted}` appears {} times; rename the duplicates",
                        hits.len()
                    )))
                }
            }
        }
        Ok(Self {
            reader,
            index,
            width: names.len(),
            names,
            delimiter,
        })
    }

    pub(crate) fn next_row(&mut self) -> Next {
        loop {
            let mut record = ByteRecord::new();
            match self.reader.read_byte_record(&mut record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    let fatal = e.is_io_error();
                    let error = RowError {
                        line,
                        reason: format!("cannot read: {e}"),
                        raw: String::new(),
                    };
                    return Some(Err(if fatal {
                        Fail::Fatal(error)
                    } else {
                        Fail::Row(error)
                    }));
                }
            }
            let line = record.position().map_or(0, |p| p.line());
            if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                continue; // blank row (`,,,` as spreadsheets write them)
            }
            let reject = |reason: String| {
                let raw = record_text(&record, self.delimiter);
                Some(Err(Fail::Row(RowError { line, reason, raw })))
            };
            if record.len() != self.width {
                return reject(format!(
                    "broken CSV record: expected {} fields as in the header, found {}",
                    self.width,
                    record.len()
                ));
            }
            let mut cells = Vec::with_capacity(self.index.len());
            for &i in &self.index {
                match std::str::from_utf8(record.get(i).unwrap_or_default()) {
                    Ok("") => cells.push(Cell::Null),
                    Ok(text) => cells.push(Cell::Text(text.to_string())),
                    Err(_) => {
                        return reject(format!(
                            "column `{}` is not valid UTF-8 (set `encoding: gbk` in the mapping?)",
                            self.names[i]
                        ));
                    }
                }
            }
            let raw = Raw::Record(record, self.delimiter);
            return Some(Ok(SourceRow { line, cells, raw }));
        }
    }
}
