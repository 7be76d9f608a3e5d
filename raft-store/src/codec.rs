//! Every byte format this crate writes: Raft entries on disk and peer payloads
//! on the wire are bincode (serde) behind a one-byte format marker; log entries
//! also carry a CRC32 so a corrupted log is detected, never used.

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

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_BINCODE_V1];
    out.extend(bincode::serde::encode_to_vec(value, config()).map_err(CodecError::Encode)?);
    Ok(out)
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
    let body = encode(value)?;
    let mut out = crc32fast::hash(&body).to_le_bytes().to_vec();
    out.extend(body);
    Ok(out)
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
}
