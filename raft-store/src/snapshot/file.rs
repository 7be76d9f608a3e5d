//! The snapshot data openraft moves around: a file on disk. The leader's
//! replication reads it in chunks of `snapshot_max_chunk_size` (openraft's
//! default `full_snapshot` seeks and reads it); a follower writes received
//! chunks at their offsets into a fresh one. Neither side holds more than a
//! chunk in memory.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// A snapshot file and where it lives. One being received is removed when
/// dropped unless it was kept (`into_received`): a transfer that openraft
/// abandons (a newer snapshot started, the leader changed) leaves nothing.
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
    discard_on_drop: bool,
}

impl SnapshotFile {
    /// Opens a finished snapshot for reading.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            path: path.to_path_buf(),
            discard_on_drop: false,
        })
    }

    /// Creates the file a snapshot is received into.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            path: path.to_path_buf(),
            discard_on_drop: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The received file, written and fsynced; from here on the caller owns
    /// it (and removes it if it is not used).
    pub async fn into_received(mut self) -> io::Result<PathBuf> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.sync_all().await?;
        self.discard_on_drop = false;
        Ok(self.path.clone())
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.discard_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().file).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.get_mut().file).poll_complete(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    #[tokio::test]
    async fn chunks_written_at_offsets_read_back_and_abandoned_files_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incoming.part");
        let mut f = SnapshotFile::create(&path).unwrap();
        f.write_all(b"hello ").await.unwrap();
        f.seek(io::SeekFrom::Start(6)).await.unwrap();
        f.write_all(b"world").await.unwrap();
        let kept = f.into_received().await.unwrap();
        let mut r = SnapshotFile::open(&kept).unwrap();
        assert_eq!(r.seek(io::SeekFrom::End(0)).await.unwrap(), 11);
        r.seek(io::SeekFrom::Start(6)).await.unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "world");
        drop(r);
        assert!(kept.exists(), "a kept or opened file stays");

        let abandoned = dir.path().join("other.part");
        let mut f = SnapshotFile::create(&abandoned).unwrap();
        f.write_all(b"half").await.unwrap();
        drop(f);
        assert!(!abandoned.exists(), "an abandoned transfer leaves no file");
    }
}
