//! A small disk for one master: a tmpfs mounted on its data directory, so the
//! harness can fill it (disk full) and free it again. Needs root; unmounted
//! when the cluster stops (also on drop).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

pub struct SmallDisk {
    mount: PathBuf,
    mounted: bool,
}

/// The file that takes up the free space.
const FILLER: &str = "chaos-filler";

impl SmallDisk {
    pub fn mount(dir: &Path, megabytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m")])
            .arg("balsa-chaos")
            .arg(dir)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mounting a tmpfs on {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self {
            mount: dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Writes a file until the disk is full. Returns the bytes written.
    pub fn fill(&self) -> anyhow::Result<u64> {
        let mut f =
            std::fs::File::create(self.mount.join(FILLER)).context("creating the filler")?;
        let chunk = vec![0x5a_u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(e).context("filling the disk"),
            }
        }
        Ok(written)
    }

    pub fn free(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.mount.join(FILLER)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context("removing the filler")
            }
            _ => Ok(()),
        }
    }

    /// Copies what the master wrote onto the real disk beside the mount (so a
    /// failed run keeps it), then unmounts. Idempotent.
    pub fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        let _ = self.free();
        let keep = self.mount.with_extension("disk");
        let _ = Command::new("cp")
            .arg("-a")
            .arg(&self.mount)
            .arg(&keep)
            .status();
        match Command::new("umount").arg(&self.mount).status() {
            Ok(s) if s.success() => self.mounted = false,
            _ => {
                // Busy (a master not yet reaped): detach lazily.
                let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
                self.mounted = false;
            }
        }
        if std::fs::remove_dir(&self.mount).is_ok() {
            let _ = std::fs::rename(&keep, &self.mount);
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        self.unmount();
    }
}
