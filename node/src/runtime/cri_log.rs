//! Container logs in the CRI log format, one file per container instance:
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F a whole line
//! 2016-10-06T00:17:09.669794202Z stderr P the first 16 KiB of a longer line
//! ```
//!
//! `F` marks the end of a line, `P` a piece of one (a line longer than
//! [`MAX_LINE`], or output that ended without a newline). The timestamp is
//! RFC 3339 with nanoseconds, trailing zeros trimmed, as Go's `RFC3339Nano`.
//! This is what `kubectl logs` (`--timestamps`, `--tail`, `--follow`,
//! `--previous`) will later be served from, by [`parse_line`].

use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Longest piece written as one log line (containerd's default).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: Timestamp,
    pub stream: Stream,
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Format one record, newline included.
pub fn format_line(time: Timestamp, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 48);
    out.extend_from_slice(time.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Parse one record (without its newline); `None` when malformed.
pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(LogLine {
        time,
        stream,
        partial,
        content: parts.next().unwrap_or_default().to_vec(),
    })
}

/// A record on its way to the file.
pub(crate) struct Record {
    stream: Stream,
    partial: bool,
    content: Vec<u8>,
}

/// Owns a log file; records from both streams come through one channel so
/// lines never interleave mid-record. Returns when every sender is gone and
/// the file is flushed.
pub(crate) async fn write_file(
    path: PathBuf,
    mut rx: mpsc::Receiver<Record>,
) -> std::io::Result<()> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await?;
    let mut file = tokio::io::BufWriter::new(file);
    while let Some(record) = rx.recv().await {
        let line = format_line(
            crate::clock::now(),
            record.stream,
            record.partial,
            &record.content,
        );
        file.write_all(&line).await?;
        // Flush when idle so `follow` readers see lines promptly.
        if rx.is_empty() {
            file.flush().await?;
        }
    }
    file.flush().await
}

/// Copy one stream into records, splitting at newlines and at [`MAX_LINE`].
pub(crate) async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    stream: Stream,
    tx: mpsc::Sender<Record>,
) {
    let mut reader = BufReader::with_capacity(MAX_LINE, reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64);
        match limited.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let partial = buf.last() != Some(&b'\n');
        if !partial {
            buf.pop();
        }
        let record = Record {
            stream,
            partial,
            content: std::mem::take(&mut buf),
        };
        if tx.send(record).await.is_err() {
            return;
        }
    }
}

/// Delete every log file of `dir` whose attempt number is below `keep_from`.
pub(crate) fn prune(dir: &Path, keep_from: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(attempt) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if attempt < keep_from {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        let time: Timestamp = "2016-10-06T00:17:09.669794202Z".parse().unwrap();
        let line = format_line(time, Stream::Stdout, false, b"hello world");
        assert_eq!(
            line,
            b"2016-10-06T00:17:09.669794202Z stdout F hello world\n".to_vec()
        );
        let parsed = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(parsed.time, time);
        assert_eq!(parsed.content, b"hello world");
        assert!(!parsed.partial);
        // Trailing zeros are trimmed, as Go's RFC3339Nano.
        let round: Timestamp = "2016-10-06T00:17:09.5Z".parse().unwrap();
        assert!(format_line(round, Stream::Stderr, true, b"")
            .starts_with(b"2016-10-06T00:17:09.5Z stderr P "));
        assert!(parse_line(b"garbage").is_none());
    }

    #[tokio::test]
    async fn long_lines_are_split_into_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let (tx, rx) = mpsc::channel(8);
        let writer = tokio::spawn(write_file(path.clone(), rx));
        let mut input = vec![b'a'; MAX_LINE + 10];
        input.extend_from_slice(b"\nshort\nend");
        pump(&input[..], Stream::Stdout, tx).await;
        writer.await.unwrap().unwrap();
        let text = std::fs::read(&path).unwrap();
        let lines: Vec<LogLine> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_line(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].partial && lines[0].content.len() == MAX_LINE);
        assert!(!lines[1].partial && lines[1].content.len() == 10);
        assert_eq!(lines[2].content, b"short");
        assert!(lines[3].partial && lines[3].content == b"end");
    }
}
