//! Lists at a consistent revision. The newest state comes from storage; an older
//! revision (a continue token's, or an exact `resourceVersion`) is the newest
//! state with the window's later events undone, so pages of one list agree even
//! while writes go on, and no tombstones are kept in storage.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::sync::Arc;

use super::window::Inner as Window;
use super::{KeyPrefix, ListOptions, ListResult, Object, Revision, StoreError};

/// Ordered access to the newest objects, as of the window's current revision.
pub trait OrderedSource {
    /// Objects whose encoded key starts with `prefix` and is `>= from`, in key order.
    fn scan<'a>(
        &'a self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Object, StoreError>> + 'a>;
}

/// The opaque continue token: the revision of the first page and the last key served.
fn encode_token(rev: Revision, last_key: &[u8]) -> String {
    format!("{}:{}", rev.0, String::from_utf8_lossy(last_key))
}

fn decode_token(token: &str) -> Result<(Revision, Vec<u8>), StoreError> {
    let bad = || StoreError::Invalid(format!("continue token {token:?} is not valid"));
    let (rev, key) = token.split_once(':').ok_or_else(bad)?;
    let rev = rev.parse().map_err(|_| bad())?;
    Ok((Revision(rev), key.as_bytes().to_vec()))
}

/// What a page needs from the window, taken while the window is held still.
pub struct ListPlan {
    at: Revision,
    from: Vec<u8>,
    undo: BTreeMap<Vec<u8>, Option<Arc<Object>>>,
}

/// Plans one page. The caller must take its storage view at `window.current()`
/// before releasing the window.
pub fn plan(
    window: &Window,
    prefix: &KeyPrefix,
    opts: &ListOptions,
) -> Result<ListPlan, StoreError> {
    prefix.validate()?;
    let (at, from) = match &opts.continue_token {
        Some(token) => {
            let (rev, last) = decode_token(token)?;
            let mut from = last;
            from.push(0); // the successor of the last key served
            (rev, from)
        }
        None => (opts.revision.unwrap_or(window.current()), Vec::new()),
    };
    if at > window.current() {
        return Err(StoreError::Unavailable(format!(
            "too large resource version: {at}, current: {}",
            window.current()
        )));
    }
    let undo = if at < window.current() {
        window.state_at(at, prefix)?
    } else {
        BTreeMap::new()
    };
    Ok(ListPlan { at, from, undo })
}

/// Serves one page from a storage view taken at the window's revision when
/// `plan` ran.
pub fn run(
    source: &dyn OrderedSource,
    plan: ListPlan,
    prefix: &KeyPrefix,
    limit: Option<usize>,
) -> Result<ListResult, StoreError> {
    let ListPlan { at, from, undo } = plan;
    let scan_prefix = prefix.encode();
    let from = from.max(scan_prefix.clone());
    let merged = Merge {
        newest: source.scan(&scan_prefix, &from).peekable(),
        undo: undo.range(from..).peekable(),
    };
    let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut items: Vec<Object> = Vec::new();
    let mut continue_token = None;
    for obj in merged {
        let obj = obj?;
        if !prefix.matches(&obj.key) {
            continue;
        }
        if let Some(last) = items.last().filter(|_| items.len() == limit) {
            continue_token = Some(encode_token(at, &last.key.encode()));
            break;
        }
        items.push(obj);
    }
    Ok(ListResult {
        items,
        revision: at,
        continue_token,
    })
}

/// Merges the newest objects with the undo map (which wins where both have a key).
struct Merge<'a, N: Iterator<Item = Result<Object, StoreError>>> {
    newest: Peekable<N>,
    undo: Peekable<std::collections::btree_map::Range<'a, Vec<u8>, Option<Arc<Object>>>>,
}

impl<N: Iterator<Item = Result<Object, StoreError>>> Iterator for Merge<'_, N> {
    type Item = Result<Object, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let newest_key = match self.newest.peek() {
                Some(Ok(obj)) => Some(obj.key.encode()),
                Some(Err(_)) => return self.newest.next(),
                None => None,
            };
            let undo_key = self.undo.peek().map(|(k, _)| (*k).clone());
            match (newest_key, undo_key) {
                (None, None) => return None,
                (Some(n), Some(u)) if u <= n => {
                    if u == n {
                        self.newest.next();
                    }
                    if let Some((_, Some(obj))) = self.undo.next() {
                        return Some(Ok((**obj).clone()));
                    }
                }
                (None, Some(_)) => {
                    if let Some((_, Some(obj))) = self.undo.next() {
                        return Some(Ok((**obj).clone()));
                    }
                }
                (Some(_), _) => return self.newest.next(),
            }
        }
    }
}
