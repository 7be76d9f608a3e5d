//! The snapshot archive: one file that carries a RocksDB checkpoint directory
//! and the snapshot's meta, streamed to a peer in chunks.
//!
//! ```text
//! "BALSASNP" | version u8
//! meta:   len u32 LE | bytes | crc32 u32 LE
//! file*:  1u8 | name len u16 LE | name | len u64 LE | bytes | crc32(name, bytes) u32 LE
//! end:    0u8 | file count u32 LE
//! ```
//!
//! What must stay true: writing and reading go through one buffer of
//! `CHUNK` bytes, so memory does not grow with the snapshot; a reader
//! checks every checksum and the end marker, so a truncated or damaged
//! archive is an error before anything it holds is used.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The copy buffer: the most either direction holds of a file at once.
pub const CHUNK: usize = 256 << 10;

const MAGIC: &[u8; 8] = b"BALSASNP";
const VERSION: u8 = 1;
const TAG_FILE: u8 = 1;
const TAG_END: u8 = 0;
/// Bounds on what a header may claim, so a damaged length cannot make a
/// reader allocate without limit.
const MAX_META: u32 = 16 << 20;
const MAX_NAME: u16 = 255;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
    #[error("not a snapshot archive (bad magic)")]
    Magic,
    #[error("archive version {0} is unknown to this replica")]
    Version(u8),
    #[error("archive is damaged: {0}")]
    Damaged(String),
}

fn damaged(what: impl Into<String>) -> ArchiveError {
    ArchiveError::Damaged(what.into())
}

/// A checkpoint file name is a plain name inside the directory.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= usize::from(MAX_NAME)
}

/// RocksDB's info log and lock file are not part of the data.
fn is_data_file(name: &str) -> bool {
    !(name == "LOCK" || name == "LOG" || name.starts_with("LOG.old"))
}

/// Writes the archive of every data file in `dir` (a flat directory, as a
/// RocksDB checkpoint is) with `meta` to `out`, copying through one buffer.
/// Returns the number of files written.
pub fn write(dir: &Path, meta: &[u8], out: &mut impl Write) -> Result<u32, ArchiveError> {
    let io_err = |step, path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io { step, path, source }
    };
    let meta_len = u32::try_from(meta.len())
        .ok()
        .filter(|l| *l <= MAX_META)
        .ok_or_else(|| damaged(format!("meta of {} bytes is too large", meta.len())))?;
    let w = |out: &mut dyn Write, b: &[u8]| out.write_all(b).map_err(ArchiveError::Write);
    w(out, MAGIC)?;
    w(out, &[VERSION])?;
    w(out, &meta_len.to_le_bytes())?;
    w(out, meta)?;
    w(out, &crc32fast::hash(meta).to_le_bytes())?;

    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_data_file(&name) {
            continue;
        }
        if !valid_name(&name) || !entry.path().is_file() {
            return Err(damaged(format!(
                "checkpoint entry {name:?} is not a plain file"
            )));
        }
        names.push(name);
    }
    names.sort();
    let mut buf = vec![0u8; CHUNK];
    for name in &names {
        let path = dir.join(name);
        let mut file = File::open(&path).map_err(io_err("opening", &path))?;
        let len = file
            .metadata()
            .map_err(io_err("reading size of", &path))?
            .len();
        w(out, &[TAG_FILE])?;
        w(out, &(name.len() as u16).to_le_bytes())?;
        w(out, name.as_bytes())?;
        w(out, &len.to_le_bytes())?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(name.as_bytes());
        let mut left = len;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file
                .read(&mut buf[..want])
                .map_err(io_err("reading", &path))?;
            if n == 0 {
                return Err(damaged(format!("{name} shrank while being archived")));
            }
            crc.update(&buf[..n]);
            w(out, &buf[..n])?;
            left -= n as u64;
        }
        w(out, &crc.finalize().to_le_bytes())?;
    }
    w(out, &[TAG_END])?;
    w(out, &(names.len() as u32).to_le_bytes())?;
    out.flush().map_err(ArchiveError::Write)?;
    Ok(names.len() as u32)
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), ArchiveError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => damaged("truncated"),
        _ => ArchiveError::Read(e),
    })
}

fn read_array<const N: usize>(input: &mut impl Read) -> Result<[u8; N], ArchiveError> {
    let mut b = [0u8; N];
    read_exact(input, &mut b)?;
    Ok(b)
}

/// Reads and checks the archive's header, returning the meta bytes. The
/// input is left at the first file.
pub fn read_meta(input: &mut impl Read) -> Result<Vec<u8>, ArchiveError> {
    if &read_array::<8>(input)? != MAGIC {
        return Err(ArchiveError::Magic);
    }
    let [version] = read_array::<1>(input)?;
    if version != VERSION {
        return Err(ArchiveError::Version(version));
    }
    let len = u32::from_le_bytes(read_array(input)?);
    if len > MAX_META {
        return Err(damaged(format!("meta claims {len} bytes")));
    }
    let mut meta = vec![0u8; len as usize];
    read_exact(input, &mut meta)?;
    let stored = u32::from_le_bytes(read_array(input)?);
    if stored != crc32fast::hash(&meta) {
        return Err(damaged("meta checksum mismatch"));
    }
    Ok(meta)
}

/// Reads an archive whose header `read_meta` already consumed, writing its
/// files into the directory `into` (created; it must not exist). Every file
/// is fsynced; on any error the caller removes `into`.
pub fn unpack(input: &mut impl Read, into: &Path) -> Result<u32, ArchiveError> {
    let io_err = |step, path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io { step, path, source }
    };
    std::fs::create_dir(into).map_err(io_err("creating", into))?;
    let mut buf = vec![0u8; CHUNK];
    let mut count = 0u32;
    loop {
        match read_array::<1>(input)? {
            [TAG_END] => break,
            [TAG_FILE] => {}
            [other] => return Err(damaged(format!("unknown record tag {other}"))),
        }
        let name_len = u16::from_le_bytes(read_array(input)?);
        if name_len > MAX_NAME {
            return Err(damaged(format!("file name of {name_len} bytes")));
        }
        let mut name = vec![0u8; usize::from(name_len)];
        read_exact(input, &mut name)?;
        let name = String::from_utf8(name).map_err(|_| damaged("file name is not UTF-8"))?;
        if !valid_name(&name) {
            return Err(damaged(format!("file name {name:?}")));
        }
        let path = into.join(&name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        let mut left = u64::from_le_bytes(read_array(input)?);
        let mut crc = crc32fast::Hasher::new();
        crc.update(name.as_bytes());
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            read_exact(input, &mut buf[..want])?;
            crc.update(&buf[..want]);
            file.write_all(&buf[..want])
                .map_err(io_err("writing", &path))?;
            left -= want as u64;
        }
        let stored = u32::from_le_bytes(read_array(input)?);
        if stored != crc.finalize() {
            return Err(damaged(format!("checksum mismatch in {name}")));
        }
        file.sync_all().map_err(io_err("syncing", &path))?;
        count += 1;
    }
    let claimed = u32::from_le_bytes(read_array(input)?);
    if claimed != count {
        return Err(damaged(format!(
            "end marker claims {claimed} files, read {count}"
        )));
    }
    sync_dir(into).map_err(io_err("syncing", into))?;
    Ok(count)
}

/// Makes a directory's entries (created, renamed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the largest single write and read, to show they are bounded
    /// by `CHUNK` and not by the snapshot's size.
    #[derive(Default)]
    struct Probe {
        data: Vec<u8>,
        pos: usize,
        max_io: usize,
    }

    impl Write for Probe {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.max_io = self.max_io.max(b.len());
            self.data.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Read for Probe {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.max_io = self.max_io.max(b.len());
            let n = b.len().min(self.data.len() - self.pos);
            b[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn sample_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        // Bigger than several chunks, with content that differs per chunk.
        let big: Vec<u8> = (0..5 * CHUNK + 123).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("000012.sst"), &big).unwrap();
        std::fs::write(dir.path().join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        std::fs::write(dir.path().join("LOG"), b"info log, not data").unwrap();
        dir
    }

    fn archive_of(dir: &Path) -> Probe {
        let mut out = Probe::default();
        assert_eq!(write(dir, b"the meta", &mut out).unwrap(), 3);
        out
    }

    #[test]
    fn round_trip_with_io_bounded_by_the_chunk() {
        let src = sample_dir();
        let mut archive = archive_of(src.path());
        assert!(archive.data.len() > 5 * CHUNK);
        assert!(archive.max_io <= CHUNK, "largest write {}", archive.max_io);
        archive.max_io = 0;
        let dst = tempfile::tempdir().unwrap();
        let into = dst.path().join("out");
        assert_eq!(read_meta(&mut archive).unwrap(), b"the meta");
        assert_eq!(unpack(&mut archive, &into).unwrap(), 3);
        assert!(archive.max_io <= CHUNK, "largest read {}", archive.max_io);
        for name in ["000012.sst", "CURRENT", "empty"] {
            assert_eq!(
                std::fs::read(into.join(name)).unwrap(),
                std::fs::read(src.path().join(name)).unwrap(),
                "{name}"
            );
        }
        assert!(!into.join("LOG").exists(), "the info log is not data");
    }

    #[test]
    fn every_damaged_or_truncated_archive_is_refused() {
        let src = sample_dir();
        let good = archive_of(src.path()).data;
        let unpack_all = |bytes: &[u8]| -> Result<u32, ArchiveError> {
            let dst = tempfile::tempdir().unwrap();
            let mut input = bytes;
            read_meta(&mut input)?;
            unpack(&mut input, &dst.path().join("out"))
        };
        assert!(unpack_all(&good).is_ok());
        // Cut anywhere: header, mid-file, before the end marker.
        for cut in [0, 5, 20, 40, good.len() / 2, good.len() - 5, good.len() - 1] {
            assert!(unpack_all(&good[..cut]).is_err(), "cut at {cut} accepted");
        }
        // A flipped byte inside the data, in the meta, in the magic.
        for at in [good.len() / 2, 12, 0] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(unpack_all(&bad).is_err(), "flip at {at} accepted");
        }
    }

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        for name in ["../x", "a/b", "", ".", ".."] {
            assert!(!valid_name(name), "{name:?}");
        }
        assert!(valid_name("MANIFEST-000005"));
    }
}
