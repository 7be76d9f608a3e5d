//! Every byte format this crate writes: Raft entries on disk and peer payloads
//! on the wire are bincode (serde) behind a one-byte format marker; log entries
//! also carry a CRC32 so a corrupted log is detected, never used.

use bincode::enc::write::SizeWriter;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format marker of bincode-with-standard-config payloads.
const FORMAT_BINCODE_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding failed: {0}")]
    Encode(#[source] bincode::error::EncodeError),
    #[error("decoding failed: {0}")]
    Decode(#[source] bincode::error::DecodeError),
    #[error("unknown format marker {0} (written by a newer Balsa?)")]
    UnknownFormat(u8),
    #[error("empty payload")]
    Empty,
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("record is {0} bytes, too short for its header")]
    Truncated(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// `value` behind the format marker, in one allocation of exactly its size.
/// Sized by a first pass that only counts, because the records are large (a
/// Raft entry holds whole objects, an AppendEntries many entries): a growing
/// buffer is reallocated and copied at every doubling, mostly onto pages the
/// process has never touched.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(encoded_len(value)?);
    encode_to(value, &mut out)?;
    Ok(out)
}

/// The length of `encode(value)`, counted without writing it.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut size = SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config()).map_err(CodecError::Encode)?;
    Ok(1 + size.bytes_written)
}

/// `encode(value)` written to `out`, for a caller with a buffer of its own.
pub fn encode_to<T: Serialize>(value: &T, out: &mut impl std::io::Write) -> Result<(), CodecError> {
    out.write_all(&[FORMAT_BINCODE_V1])
        .map_err(|e| CodecError::Encode(bincode::error::EncodeError::Io { inner: e, index: 0 }))?;
    bincode::serde::encode_into_std_write(value, out, config()).map_err(CodecError::Encode)?;
    Ok(())
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_BINCODE_V1, rest)) => Ok(bincode::serde::decode_from_slice(rest, config())
            .map_err(CodecError::Decode)?
            .0),
        Some((other, _)) => Err(CodecError::UnknownFormat(*other)),
    }
}

/// A record with its checksum: `crc32 (4 bytes LE) | encode(value)`.
pub fn encode_checked<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_checked_into(value, &mut out)?;
    Ok(out)
}

/// `encode_checked` into `out`, which is cleared first and grows only when
/// the record does not fit: a writer of record after record (the log's
/// appends) keeps one buffer at its largest record's size. A fresh buffer
/// per record, of each record's own size, drew on pages the process had not
/// touched yet: zeroing them was a sixth of a follower's perf samples in the
/// scheduler benchmark (part of that then moved to the next fresh buffers,
/// the peer server's receive buffers).
pub fn encode_checked_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let len = encoded_len(value)?;
    out.clear();
    out.reserve_exact(4 + len);
    out.extend_from_slice(&[0; 4]);
    encode_to(value, out)?;
    let crc = crc32fast::hash(&out[4..]).to_le_bytes();
    out[..4].copy_from_slice(&crc);
    Ok(())
}

pub fn decode_checked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() < 5 {
        return Err(CodecError::Truncated(bytes.len()));
    }
    let (crc, body) = bytes.split_at(4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_records_detect_corruption_and_truncation() {
        let rec = encode_checked(&("hello", 42u64)).unwrap();
        assert_eq!(decode_checked::<(String, u64)>(&rec).unwrap().1, 42);
        let mut bad = rec.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            decode_checked::<(String, u64)>(&bad),
            Err(CodecError::Checksum { .. })
        ));
        assert!(decode_checked::<(String, u64)>(&rec[..rec.len() - 3]).is_err());
        assert!(matches!(
            decode::<u8>(&[9, 1]),
            Err(CodecError::UnknownFormat(9))
        ));
    }

    /// The bytes are the format's, whatever the buffering: older and newer
    /// replicas read each other's logs and peer messages.
    #[test]
    fn records_are_the_marker_then_bincode_in_a_buffer_of_exactly_their_size() {
        let value = (
            "key".to_string(),
            bytes::Bytes::from(vec![7u8; 100_000]),
            Some(42u64),
        );
        let plain = bincode::serde::encode_to_vec(&value, config()).unwrap();
        let rec = encode(&value).unwrap();
        assert_eq!(rec[0], FORMAT_BINCODE_V1);
        assert_eq!(rec[1..], plain[..]);
        assert_eq!(rec.capacity(), rec.len());
        let checked = encode_checked(&value).unwrap();
        assert_eq!(checked[4..], rec[..]);
        assert_eq!(checked[..4], crc32fast::hash(&rec).to_le_bytes());
        assert_eq!(checked.capacity(), checked.len());
        let back: (String, bytes::Bytes, Option<u64>) = decode_checked(&checked).unwrap();
        assert_eq!(back, value);
    }

    /// A reused buffer gives each record exactly the bytes a fresh one does,
    /// and keeps its allocation while records fit.
    #[test]
    fn a_reused_buffer_holds_exactly_each_record() {
        let big = ("big".to_string(), bytes::Bytes::from(vec![1u8; 50_000]));
        let small = ("small".to_string(), bytes::Bytes::from(vec![2u8; 10]));
        let mut buf = Vec::new();
        encode_checked_into(&big, &mut buf).unwrap();
        assert_eq!(buf, encode_checked(&big).unwrap());
        let (ptr, cap) = (buf.as_ptr(), buf.capacity());
        encode_checked_into(&small, &mut buf).unwrap();
        assert_eq!(buf, encode_checked(&small).unwrap());
        assert_eq!((buf.as_ptr(), buf.capacity()), (ptr, cap));
        let back: (String, bytes::Bytes) = decode_checked(&buf).unwrap();
        assert_eq!(back, small);
    }
}
