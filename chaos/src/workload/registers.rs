//! One register client: a loop of create / read / CAS update / delete / list
//! on a small key set, through one replica, paced to its share of the rate.
//! Every op is recorded with its invoke and completion time; a write whose
//! answer does not come in time (or that fails in a way that may hide an
//! effect) is recorded as unknown.

use std::collections::HashMap;
use std::time::Duration;

use balsa_api::grpc::client::Client;
use balsa_api::StoreError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use super::objects::{self, NAMESPACE};
use crate::history::{Call, Failure, OpRecord, Outcome, Record, Recorder, Reply};

#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub client: u32,
    pub replica: u64,
    pub addr: String,
    pub keys: usize,
    /// Ops per second this client aims for.
    pub rate: f64,
    pub timeout: Duration,
    pub seed: u64,
}

/// Connects lazily and again after a failure (the replica may be dead).
struct Conn {
    addr: String,
    client: Option<Client>,
}

impl Conn {
    async fn get(&mut self) -> Result<Client, StoreError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(Duration::from_secs(1), Client::connect(&self.addr))
            .await
            .map_err(|_| StoreError::Unavailable(format!("connecting to {}", self.addr)))??;
        self.client = Some(c.clone());
        Ok(c)
    }
}

pub async fn run(spec: ClientSpec, rec: Recorder, mut stop: watch::Receiver<bool>) {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut conn = Conn {
        addr: spec.addr.clone(),
        client: None,
    };
    // The last revision this client saw per key: what its CAS expects.
    let mut known: HashMap<String, u64> = HashMap::new();
    let period = Duration::from_secs_f64(1.0 / spec.rate.max(0.1));
    let mut next = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        next += period;
        let name = format!("k{}", rng.gen_range(0..spec.keys));
        let call = choose(&mut rng, &known, &name, &rec);
        let op = one(&spec, &mut conn, &rec, &name, call).await;
        learn(&mut known, &op);
        rec.record(Record::Op(op));
        let now = Instant::now();
        if next < now {
            next = now;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
    }
}

fn choose(rng: &mut StdRng, known: &HashMap<String, u64>, name: &str, rec: &Recorder) -> Call {
    let value = || format!("w{}", rec.next_id());
    let expected = known.get(name).copied();
    match rng.gen_range(0..100) {
        0..=34 => Call::Read,
        35..=44 => Call::List,
        45..=59 => Call::Create { value: value() },
        60..=84 => Call::Update {
            value: value(),
            expected: expected.or(Some(1)),
        },
        85..=89 => Call::Update {
            value: value(),
            expected: None,
        },
        90..=95 => Call::Delete { expected },
        _ => Call::Delete { expected: None },
    }
}

fn learn(known: &mut HashMap<String, u64>, op: &OpRecord) {
    match (&op.call, &op.outcome) {
        (Call::Delete { .. }, Outcome::Ok(_)) => {
            known.remove(&op.key);
        }
        (_, Outcome::Ok(Reply::Written { rev })) => {
            known.insert(op.key.clone(), *rev);
        }
        (_, Outcome::Ok(Reply::Found { object })) => match object {
            Some(s) => {
                known.insert(op.key.clone(), s.rev);
            }
            None => {
                known.remove(&op.key);
            }
        },
        (_, Outcome::Ok(Reply::Listed { items, .. })) => {
            known.clear();
            for (k, s) in items {
                known.insert(k.clone(), s.rev);
            }
        }
        _ => {}
    }
}

async fn one(
    spec: &ClientSpec,
    conn: &mut Conn,
    rec: &Recorder,
    name: &str,
    call: Call,
) -> OpRecord {
    let id = rec.next_id();
    let invoke = rec.now();
    let key = if call == Call::List {
        String::new()
    } else {
        name.to_string()
    };
    let is_write = call.is_write();
    let attempt = tokio::time::timeout(spec.timeout, send(conn, name, &call)).await;
    let outcome = match attempt {
        Ok(Ok(reply)) => Outcome::Ok(reply),
        Ok(Err(e)) => {
            if matches!(e, StoreError::Unavailable(_)) {
                conn.client = None;
            }
            let message = e.to_string();
            match (is_write, objects::write_failure(&e)) {
                (true, Some(failure)) => Outcome::Fail { failure, message },
                (true, None) => Outcome::Unknown { message },
                (false, _) => Outcome::Fail {
                    failure: Failure::Other,
                    message,
                },
            }
        }
        Err(_) => {
            conn.client = None;
            let message = format!("no answer within {:?}", spec.timeout);
            if is_write {
                Outcome::Unknown { message }
            } else {
                Outcome::Fail {
                    failure: Failure::Other,
                    message,
                }
            }
        }
    };
    OpRecord {
        id,
        client: spec.client,
        replica: spec.replica,
        key,
        call,
        invoke,
        complete: rec.now(),
        outcome,
    }
}

fn unparsable() -> StoreError {
    StoreError::Internal("a returned object lacks name, resourceVersion or data.v".into())
}

async fn send(conn: &mut Conn, name: &str, call: &Call) -> Result<Reply, StoreError> {
    let client = conn.get().await?;
    let key = objects::key(name);
    match call {
        Call::Create { value } => {
            let (_, rev) = client.create(objects::configmap(name, value, None)).await?;
            Ok(Reply::Written { rev: rev.0 })
        }
        Call::Update { value, expected } => {
            let (_, rev) = client
                .update(objects::configmap(name, value, *expected))
                .await?;
            Ok(Reply::Written { rev: rev.0 })
        }
        Call::Delete { expected } => {
            let (_, rev) = client
                .delete(&key, None, expected.map(balsa_api::Revision))
                .await?;
            Ok(Reply::Written { rev: rev.0 })
        }
        Call::Read => match client.get(&key, false).await {
            Ok((bytes, _)) => {
                let (_, seen) = objects::parse(&bytes).ok_or_else(unparsable)?;
                Ok(Reply::Found { object: Some(seen) })
            }
            Err(StoreError::NotFound { .. }) => Ok(Reply::Found { object: None }),
            Err(e) => Err(e),
        },
        Call::List => {
            let page = client
                .list("", "configmaps", Some(NAMESPACE), 0, None)
                .await?;
            let items = page
                .items
                .iter()
                .map(|b| objects::parse(b).ok_or_else(unparsable))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Reply::Listed {
                rev: page.revision.0,
                items,
            })
        }
    }
}
