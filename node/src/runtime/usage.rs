//! What a process-runtime container uses, read from `/proc` and the
//! filesystem, for eviction ranking: the resident memory of its process
//! group, and the bytes a pod's directory and logs take on disk.
//!
//! Both are blocking reads: callers run them on the blocking pool.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `(pgrp, rss pages)` from a `/proc/PID/stat` line; the command name may
/// hold spaces and parentheses, so fields are counted after the last `)`.
fn stat_fields(text: &str) -> Option<i32> {
    let after = &text[text.rfind(')')? + 1..];
    // After the name: state, ppid, pgrp, …
    after.split_whitespace().nth(2)?.parse().ok()
}

/// `VmRSS` of a `/proc/PID/status`, in bytes.
fn vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The resident memory of every process in group `pgid`, in bytes.
pub fn process_group_rss(pgid: i32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|t| stat_fields(&t))
                == Some(pgid)
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|t| vm_rss(&t))
        .sum()
}

/// Bytes allocated to the files under `path` (symlinks are not followed:
/// a hostPath volume is someone else's disk).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let children: u64 = std::fs::read_dir(path)
        .map(|d| d.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0);
    own + children
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_name() {
        let line = "4242 (a (b) c) S 1 4240 4240 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5 1000 250 18446744073709551615";
        assert_eq!(stat_fields(line), Some(4240));
        assert_eq!(vm_rss("Name:\tx\nVmRSS:\t   1536 kB\n"), Some(1536 * 1024));
    }

    #[test]
    fn measures_this_process_group_and_a_directory() {
        let pgid = nix::unistd::getpgrp().as_raw();
        assert!(
            process_group_rss(pgid) > 0,
            "this test process is in its group"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), vec![7u8; 64 * 1024]).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).unwrap();
        let used = disk_usage(dir.path());
        assert!((64 * 1024..16 << 20).contains(&used), "{used}");
    }
}
