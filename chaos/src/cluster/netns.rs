//! A private network for one run: a bridge in the root namespace and, per
//! master, a network namespace joined to it by a veth pair — several "hosts"
//! on one machine. Partitions are iptables DROP rules inside the namespaces
//! (or blackhole routes where iptables is missing); loss is iptables'
//! `statistic` match (there is no `tc netem` on these kernels). Only traffic
//! between masters is touched: the harness reaches every master over the
//! bridge whatever the partition.
//!
//! Every name carries the run id, so runs never collide, and
//! [`Net::teardown`] (also run on drop) removes every namespace and link this
//! run made. `balsa-chaos cleanup` removes leftovers of a harness that was
//! SIGKILLed.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Prefix of every namespace this harness creates.
pub const NS_PREFIX: &str = "bchaos-";

pub struct Net {
    run: String,
    subnet: [u8; 3],
    bridge: String,
    hosts: Vec<Host>,
    firewall: Firewall,
    /// Rules added since the last heal, to remove them again.
    applied: Vec<Rule>,
    torn_down: bool,
}

struct Host {
    ns: String,
    veth: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firewall {
    Iptables,
    /// No iptables: partitions by blackhole routes, no packet loss.
    Routes,
}

#[derive(Debug, Clone)]
enum Rule {
    Iptables { ns: String, args: Vec<String> },
    Route { ns: String, peer: Ipv4Addr },
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this machine lets us make network namespaces (root, `ip`, and a
/// kernel that allows it). Tries one and removes it.
pub fn available() -> bool {
    let probe = format!("{NS_PREFIX}probe-{}", std::process::id());
    let ok = ip(&["netns", "add", &probe]).is_ok();
    if ok {
        let _ = ip(&["netns", "del", &probe]);
    }
    ok
}

/// A /24 in 10.0.0.0/8 that no interface on this machine uses.
fn free_subnet(seed: u32) -> anyhow::Result<[u8; 3]> {
    let out = Command::new("ip").args(["-o", "-4", "addr"]).output()?;
    let used = String::from_utf8_lossy(&out.stdout).to_string();
    for i in 0..200u32 {
        let n = seed.wrapping_add(i * 7919);
        let subnet = [10, 100 + (n % 100) as u8, ((n / 100) % 250) as u8];
        let prefix = format!(" {}.{}.{}.", subnet[0], subnet[1], subnet[2]);
        if !used.contains(&prefix) {
            return Ok(subnet);
        }
    }
    bail!("no free 10.x.y.0/24 subnet found")
}

impl Net {
    /// Makes the bridge and one namespace per master. On error, removes
    /// whatever it had made.
    pub fn create(run: &str, masters: usize, seed: u32) -> anyhow::Result<Self> {
        // BALSA_CHAOS_FIREWALL=routes tries the fallback where iptables exists.
        let routes_only = std::env::var("BALSA_CHAOS_FIREWALL").is_ok_and(|v| v == "routes");
        let firewall = if has("iptables") && !routes_only {
            Firewall::Iptables
        } else {
            Firewall::Routes
        };
        let mut net = Net {
            run: run.to_string(),
            subnet: free_subnet(seed)?,
            bridge: format!("bcb{run}"),
            hosts: Vec::new(),
            firewall,
            applied: Vec::new(),
            torn_down: false,
        };
        net.build(masters)?;
        Ok(net)
    }

    fn build(&mut self, masters: usize) -> anyhow::Result<()> {
        let gw = format!("{}/24", self.gateway());
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &gw, "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        for i in 0..masters {
            let host = Host {
                ns: format!("{NS_PREFIX}{}-{}", self.run, i + 1),
                veth: format!("bcv{}{}", self.run, i + 1),
            };
            ip(&["netns", "add", &host.ns])?;
            self.hosts.push(host);
            let host = &self.hosts[i];
            ip(&[
                "link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns",
                &host.ns,
            ])?;
            ip(&["link", "set", &host.veth, "master", &self.bridge])?;
            ip(&["link", "set", &host.veth, "up"])?;
            let addr = format!("{}/24", self.addr(i));
            ip(&["-n", &host.ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    pub fn firewall(&self) -> Firewall {
        self.firewall
    }

    fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    /// The address of master `i` (0-based).
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, i as u8 + 1)
    }

    pub fn namespace(&self, i: usize) -> &str {
        &self.hosts[i].ns
    }

    /// Cuts every pair (a, b) in `cut`, both directions.
    pub fn cut(&mut self, cut: &[(usize, usize)]) -> anyhow::Result<()> {
        for &(a, b) in cut {
            self.drop_between(a, b, None)?;
            self.drop_between(b, a, None)?;
        }
        Ok(())
    }

    /// Drops each packet between masters with probability `p`.
    pub fn loss(&mut self, p: f64) -> anyhow::Result<()> {
        if self.firewall != Firewall::Iptables {
            bail!("packet loss needs iptables (apt-get install iptables)");
        }
        for a in 0..self.hosts.len() {
            for b in 0..self.hosts.len() {
                if a != b {
                    self.drop_between(a, b, Some(p))?;
                }
            }
        }
        Ok(())
    }

    /// Makes `at` drop what it receives from `from` (and sends to it).
    fn drop_between(&mut self, at: usize, from: usize, p: Option<f64>) -> anyhow::Result<()> {
        let ns = self.hosts[at].ns.clone();
        let peer = self.addr(from);
        match self.firewall {
            Firewall::Iptables => {
                let peer = peer.to_string();
                let mut stat = Vec::new();
                if let Some(p) = p {
                    stat = vec![
                        "-m".to_string(),
                        "statistic".into(),
                        "--mode".into(),
                        "random".into(),
                        "--probability".into(),
                        format!("{p:.3}"),
                    ];
                }
                for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                    let mut args: Vec<String> = vec![chain.into(), dir.into(), peer.clone()];
                    args.extend(stat.iter().cloned());
                    args.extend(["-j".into(), "DROP".into()]);
                    let mut full = vec!["netns", "exec", &ns, "iptables", "-A"];
                    full.extend(args.iter().map(String::as_str));
                    ip(&full)?;
                    self.applied.push(Rule::Iptables {
                        ns: ns.clone(),
                        args,
                    });
                }
            }
            Firewall::Routes => {
                let dst = format!("{peer}/32");
                // The route may already be there from the other direction's rule.
                if ip(&["-n", &ns, "route", "add", "blackhole", &dst]).is_ok() {
                    self.applied.push(Rule::Route { ns, peer });
                }
            }
        }
        Ok(())
    }

    /// Removes every partition and loss rule.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for rule in std::mem::take(&mut self.applied).into_iter().rev() {
            let r = match &rule {
                Rule::Iptables { ns, args } => {
                    let mut full = vec!["netns", "exec", ns.as_str(), "iptables", "-D"];
                    full.extend(args.iter().map(String::as_str));
                    ip(&full)
                }
                Rule::Route { ns, peer } => {
                    let dst = format!("{peer}/32");
                    ip(&["-n", ns, "route", "del", "blackhole", &dst])
                }
            };
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes every namespace and link of this run. Idempotent; errors are
    /// logged, not returned, since this also runs on the way out of a failure.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for h in &self.hosts {
            let _ = ip(&["link", "del", &h.veth]);
            if let Err(e) = ip(&["netns", "del", &h.ns]) {
                tracing::warn!(netns = %h.ns, error = %e, "removing a namespace");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            tracing::warn!(bridge = %self.bridge, error = %e, "removing the bridge");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes namespaces and bridges left by harnesses that did not get to clean
/// up (SIGKILL). Returns what it removed.
pub fn cleanup_leftovers() -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name.starts_with(NS_PREFIX) {
            ip(&["netns", "del", name])?;
            removed.push(name.to_string());
        }
    }
    let out = Command::new("ip").args(["-o", "link"]).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split(": ").nth(1).unwrap_or_default();
        let name = name.split('@').next().unwrap_or_default();
        if name.starts_with("bcb") || name.starts_with("bcv") {
            ip(&["link", "del", name])?;
            removed.push(name.to_string());
        }
    }
    Ok(removed)
}
