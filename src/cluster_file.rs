//! `cluster.json`: what `balsa up` started, for the client verbs, scripts and the
//! chaos harness.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "cluster.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFile {
    pub api_version: String,
    pub kind: String,
    pub members: Vec<MemberEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberEntry {
    pub id: u64,
    pub pid: u32,
    pub peer: String,
    pub api: String,
    /// The Kubernetes REST API address (absent in files of older versions).
    #[serde(default)]
    pub rest: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl ClusterFile {
    pub fn new(members: Vec<MemberEntry>) -> Self {
        Self {
            api_version: "balsa.dev/v1".into(),
            kind: "Cluster".into(),
            members,
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (start a cluster with `balsa up`, or pass --server)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn api_addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.api.clone()).collect()
    }
}
