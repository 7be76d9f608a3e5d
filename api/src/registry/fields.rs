//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Each manager owns a set of field paths, stored as a `FieldsV1` trie
//! (`{"f:spec":{"f:replicas":{}}}`; list items merged by key are
//! `k:{"name":"app"}`, set items `v:"x"`). An update gives its manager the fields
//! it changed; an apply gives its manager exactly the fields in its
//! configuration, refuses to change a field another manager owns unless forced,
//! and removes fields the manager applied before but no longer does.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::error::{ApiError, Cause, Reason, Subject};
use super::patch::{merge_key, strategic_merge};

/// A path of FieldsV1 elements.
type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// metadata fields that are owned like any other; the rest are identity.
const OWNED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// The leaf fields `v` sets.
pub fn leaves(v: &Value) -> FieldSet {
    walk(v, None).all
}

/// The leaf fields of `new` whose value differs in `old` (`value_at` of the
/// path in each). Subtrees equal in both are not walked: an update of a
/// pod's status does not list every field of its spec.
fn changed_fields(new: &Value, old: &Value) -> FieldSet {
    walk(new, Some(old)).changed
}

/// What a walk found: every leaf field (a walk over one object), or the
/// changed ones (a walk comparing it with an older one).
struct Leaves {
    all: FieldSet,
    changed: FieldSet,
}

/// Where the path walked so far leads in `new` and in `old` (`value_at`,
/// found one element at a time rather than from the root for every leaf).
#[derive(Clone, Copy)]
struct Cursors<'a> {
    new: Option<&'a Value>,
    old: Option<&'a Value>,
}

impl<'a> Cursors<'a> {
    fn step(self, el: &str) -> Self {
        Self {
            new: self.new.and_then(|v| step(v, el)),
            old: self.old.and_then(|v| step(v, el)),
        }
    }
}

impl Leaves {
    fn insert(&mut self, path: Path, at: Option<Cursors>) {
        match at {
            Some(at) => {
                if at.new != at.old {
                    self.changed.insert(path);
                }
            }
            None => {
                self.all.insert(path);
            }
        }
    }
}

fn walk(v: &Value, old: Option<&Value>) -> Leaves {
    let mut out = Leaves {
        all: FieldSet::new(),
        changed: FieldSet::new(),
    };
    let root = old.map(|old| Cursors {
        new: Some(v),
        old: Some(old),
    });
    let at = |path: &Path| root.map(|r| path.iter().fold(r, |c, el| c.step(el)));
    if let Some(map) = v.as_object() {
        for (k, c) in map {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    for (mk, mc) in c.as_object().into_iter().flatten() {
                        if OWNED_METADATA.contains(&mk.as_str()) {
                            let path = vec!["f:metadata".into(), format!("f:{mk}")];
                            let cur = at(&path);
                            child(mc, mk, path, cur, &mut out);
                        }
                    }
                }
                _ => {
                    let path = vec![format!("f:{k}")];
                    let cur = at(&path);
                    child(c, k, path, cur, &mut out)
                }
            }
        }
    }
    out
}

fn child(c: &Value, field: &str, path: Path, at: Option<Cursors>, out: &mut Leaves) {
    // Comparing, and the same here in both: no leaf below has changed (each
    // path below is looked up through these two values).
    if at.is_some_and(|at| at.new == at.old) {
        return;
    }
    let then = |p: &Path| at.map(|a| a.step(p.last().expect("a child's path has an element")));
    match c {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                let cur = then(&p);
                child(v, k, p, cur, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let refs: Vec<&Value> = items.iter().collect();
            if field == "finalizers" {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    let cur = then(&p);
                    out.insert(p, cur);
                }
            } else if let Some(key) =
                merge_key(field, &refs).filter(|_| items.iter().all(Value::is_object))
            {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("k:{}", json!({ key: item[key] })));
                    // `.` is the item itself: where its key leads.
                    let cur = then(&p);
                    let mut dot = p.clone();
                    dot.push(".".into());
                    out.insert(dot, cur);
                    child(item, "", p, cur, out);
                }
            } else {
                out.insert(path, at);
            }
        }
        _ => {
            out.insert(path, at);
        }
    }
}

/// `to_fields_v1(&leaves(v))`, built in place: the trie of a created object,
/// without a path of strings per leaf first.
fn leaves_trie(v: &Value) -> Map<String, Value> {
    let mut root = Map::new();
    for (k, c) in v.as_object().into_iter().flatten() {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for (mk, mc) in c.as_object().into_iter().flatten() {
                    if OWNED_METADATA.contains(&mk.as_str()) {
                        let meta = trie_node(&mut root, "f:metadata".into());
                        trie_leaves(mc, mk, trie_node(meta, format!("f:{mk}")));
                    }
                }
            }
            _ => trie_leaves(c, k, trie_node(&mut root, format!("f:{k}"))),
        }
    }
    root
}

/// The child `el` of a trie node, added empty (a leaf) if absent.
fn trie_node(node: &mut Map<String, Value>, el: String) -> &mut Map<String, Value> {
    node.entry(el)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("trie nodes are objects")
}

/// The leaves below `c` (field `field`, at trie node `at`), as `child` lists them.
fn trie_leaves(c: &Value, field: &str, at: &mut Map<String, Value>) {
    match c {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                trie_leaves(v, k, trie_node(at, format!("f:{k}")));
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let refs: Vec<&Value> = items.iter().collect();
            if field == "finalizers" {
                for item in items {
                    trie_node(at, format!("v:{item}"));
                }
            } else if let Some(key) =
                merge_key(field, &refs).filter(|_| items.iter().all(Value::is_object))
            {
                for item in items {
                    let node = trie_node(at, format!("k:{}", json!({ key: item[key] })));
                    trie_node(node, ".".into());
                    trie_leaves(item, "", node);
                }
            }
        }
        // A leaf: the node itself.
        _ => {}
    }
}

/// Whether `path` is one of `leaves(v)`, found by following it down `v`
/// (as `walk` and `child` list leaves) rather than by listing them all.
fn is_leaf(v: &Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let Some(c) = first.strip_prefix("f:").and_then(|k| Some((k, v.get(k)?))) else {
        return false;
    };
    match c {
        ("apiVersion" | "kind", _) => false,
        ("metadata", meta) => {
            let Some((second, rest)) = rest.split_first() else {
                return false;
            };
            let Some(mk) = second.strip_prefix("f:") else {
                return false;
            };
            OWNED_METADATA.contains(&mk)
                && meta
                    .as_object()
                    .and_then(|m| m.get(mk))
                    .is_some_and(|mc| leaf_below(mc, mk, rest))
        }
        (k, c) => leaf_below(c, k, rest),
    }
}

/// [`is_leaf`] from `c`, reached as `field`: whether `rest` leads to a leaf
/// `child` lists.
fn leaf_below(c: &Value, field: &str, rest: &[String]) -> bool {
    match c {
        Value::Object(m) if !m.is_empty() => {
            let Some((el, rest)) = rest.split_first() else {
                return false;
            };
            el.strip_prefix("f:")
                .and_then(|k| Some((k, m.get(k)?)))
                .is_some_and(|(k, v)| leaf_below(v, k, rest))
        }
        Value::Array(items) if !items.is_empty() => {
            if field == "finalizers" {
                return match rest {
                    [el] => items.iter().any(|i| *el == format!("v:{i}")),
                    _ => false,
                };
            }
            let refs: Vec<&Value> = items.iter().collect();
            match merge_key(field, &refs).filter(|_| items.iter().all(Value::is_object)) {
                Some(key) => {
                    let Some((el, rest)) = rest.split_first() else {
                        return false;
                    };
                    items
                        .iter()
                        .filter(|i| *el == format!("k:{}", json!({ key: i[key] })))
                        .any(|i| (rest.len() == 1 && rest[0] == ".") || leaf_below(i, "", rest))
                }
                None => rest.is_empty(),
            }
        }
        _ => rest.is_empty(),
    }
}

/// The value at `path`, if present.
fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if el == "." {
        return Some(cur);
    }
    if let Some(f) = el.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    if let Some(val) = el.strip_prefix("v:") {
        let want: Value = serde_json::from_str(val).ok()?;
        return items.iter().find(|i| **i == want);
    }
    None
}

/// Removes the field at `path` from `v`.
fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        return remove_at(v, parents);
    }
    let mut cur = v;
    for el in parents {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            let idx = step(cur, el).and_then(|target| {
                cur.as_array()
                    .and_then(|a| a.iter().position(|x| std::ptr::eq(x, target)))
            });
            match idx {
                Some(i) => cur.get_mut(i),
                None => None,
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
        return;
    }
    let target = step(cur, last).map(|t| t as *const Value);
    if let (Some(t), Some(items)) = (target, cur.as_array_mut()) {
        items.retain(|x| !std::ptr::eq(x, t));
    }
}

/// The FieldsV1 trie of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            cur = cur
                .entry(el.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("trie nodes are objects");
        }
    }
    Value::Object(root)
}

/// The set a FieldsV1 trie holds.
pub fn from_fields_v1(trie: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(trie, Vec::new(), &mut out);
    out
}

fn collect(node: &Value, path: Path, out: &mut FieldSet) {
    match node.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(k.clone());
                collect(c, p, out);
            }
        }
        _ if !path.is_empty() => {
            out.insert(path);
        }
        _ => {}
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, Default)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
    /// The `fieldsV1` read, while `fields` is still exactly what it holds
    /// and it is the trie `to_fields_v1` would write for them: stored back
    /// as it is, so an update leaves the entries of managers it does not
    /// touch without a second encoding.
    kept: Option<Value>,
    /// The whole entry as read, when an update cannot change it (`Moved`):
    /// stored back as it is, its trie never read (`fields` is left empty).
    whole: Option<Value>,
}

impl Entry {
    /// `fields` is about to change: the stored trie no longer holds them.
    fn fields_mut(&mut self) -> &mut FieldSet {
        self.kept = None;
        &mut self.fields
    }
}

/// Whether `trie` is as `to_fields_v1` writes one: objects all the way
/// down, a leaf being an empty object.
fn canonical(trie: &Value) -> bool {
    trie.as_object().is_some_and(|m| m.values().all(canonical))
}

fn entries(v: &Value) -> Vec<Entry> {
    v["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(entry)
        .collect()
}

fn entry(e: &Value) -> Entry {
    Entry {
        manager: e["manager"].as_str().unwrap_or_default().into(),
        operation: e["operation"].as_str().unwrap_or("Update").into(),
        api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
        time: e["time"].as_str().unwrap_or_default().into(),
        subresource: e["subresource"].as_str().unwrap_or_default().into(),
        fields: from_fields_v1(&e["fieldsV1"]),
        kept: Some(&e["fieldsV1"]).filter(|t| canonical(t)).cloned(),
        whole: None,
    }
}

/// Which of an object's top-level fields (and owned metadata fields) an
/// update changed, each compared once: a manager owning none of them owns
/// the same fields after the update, all still set.
struct Moved<'a> {
    new: &'a Value,
    old: &'a Value,
    seen: Vec<(&'a str, bool)>,
}

impl<'a> Moved<'a> {
    fn new(new: &'a Value, old: &'a Value) -> Self {
        Self {
            new,
            old,
            seen: Vec::new(),
        }
    }

    fn differs(&mut self, metadata: bool, field: &'a str) -> bool {
        let Some(name) = field.strip_prefix("f:") else {
            return true;
        };
        if metadata {
            return self.new["metadata"].get(name) != self.old["metadata"].get(name);
        }
        if let Some(&(_, d)) = self.seen.iter().find(|(k, _)| *k == name) {
            return d;
        }
        let d = self.new.get(name) != self.old.get(name);
        self.seen.push((name, d));
        d
    }

    /// Whether a trie owns anything under a field the update changed.
    fn touches(&mut self, trie: &'a Value) -> bool {
        let Some(top) = trie.as_object() else {
            return true;
        };
        for (k, sub) in top {
            if k == "f:metadata" {
                let Some(meta) = sub.as_object() else {
                    return true;
                };
                if meta.keys().any(|mk| self.differs(true, mk)) {
                    return true;
                }
            } else if self.differs(false, k) {
                return true;
            }
        }
        false
    }
}

/// An entry as `managedFields` holds it.
fn stored_entry(e: Entry) -> Value {
    // Built by moving each value in: `json!` would serialize the FieldsV1
    // trie into a copy of itself, a third of the time a create spent on its
    // managedFields.
    let mut o = Map::new();
    o.insert("manager".into(), Value::String(e.manager));
    o.insert("operation".into(), Value::String(e.operation));
    o.insert("apiVersion".into(), Value::String(e.api_version));
    o.insert("time".into(), Value::String(e.time));
    o.insert("fieldsType".into(), "FieldsV1".into());
    let fields_v1 = e.kept.unwrap_or_else(|| to_fields_v1(&e.fields));
    o.insert("fieldsV1".into(), fields_v1);
    if !e.subresource.is_empty() {
        o.insert("subresource".into(), Value::String(e.subresource));
    }
    Value::Object(o)
}

fn store_entries(v: &mut Value, list: Vec<Entry>) {
    let out: Vec<Value> = list
        .into_iter()
        .filter(|e| e.whole.is_some() || !e.fields.is_empty())
        .map(|e| match e.whole {
            Some(whole) => whole,
            None => stored_entry(e),
        })
        .collect();
    if let Some(m) = v["metadata"].as_object_mut() {
        if out.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(out));
        }
    }
}

fn upsert<'a>(
    list: &'a mut Vec<Entry>,
    manager: &str,
    operation: &str,
    subresource: &str,
) -> &'a mut Entry {
    let pos = list.iter().position(|e| {
        e.manager == manager && e.operation == operation && e.subresource == subresource
    });
    match pos {
        Some(i) => &mut list[i],
        None => {
            list.push(Entry {
                manager: manager.into(),
                operation: operation.into(),
                api_version: String::new(),
                time: String::new(),
                subresource: subresource.into(),
                fields: FieldSet::new(),
                kept: None,
                whole: None,
            });
            list.last_mut().expect("just pushed")
        }
    }
}

/// `old`'s entries, for an update to `new` by `manager`: those the update
/// cannot change (another manager's, owning no field the update changed)
/// whole and unread, taken from `new` when it carries them as `old` does.
fn update_entries(old: &Value, new: &mut Value, manager: &str, subresource: &str) -> Vec<Entry> {
    let Some(was) = old["metadata"]["managedFields"].as_array() else {
        return Vec::new();
    };
    let carried = new["metadata"]
        .as_object_mut()
        .and_then(|m| m.remove("managedFields"));
    let mut moved = Moved::new(new, old);
    let mut carried = match carried {
        Some(Value::Array(items)) if items == *was => items.into_iter().map(Some).collect(),
        _ => vec![None; was.len()],
    };
    was.iter()
        .zip(carried.iter_mut())
        .map(|(e, carried)| {
            let mine = e["manager"] == manager
                && e["operation"].as_str().unwrap_or("Update") == "Update"
                && e["subresource"].as_str().unwrap_or_default() == subresource;
            let trie = &e["fieldsV1"];
            let untouched = !mine
                && trie.as_object().is_some_and(|m| !m.is_empty())
                && canonical(trie)
                && !moved.touches(trie);
            if !untouched {
                return entry(e);
            }
            // Only `whole` is read of it: its empty operation matches no upsert.
            Entry {
                whole: Some(carried.take().unwrap_or_else(|| e.clone())),
                ..Entry::default()
            }
        })
        .collect()
}

/// Records an update by `manager` from `old` (None for a create) to `new`:
/// the fields it changed become its own; fields that are gone are nobody's.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    time: &str,
) {
    let Some(old) = old else {
        // A create changes every field it sets: its one entry is their trie.
        let trie = leaves_trie(new);
        let entry = (!trie.is_empty()).then(|| Entry {
            whole: Some(stored_entry(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: new["apiVersion"].as_str().unwrap_or_default().into(),
                time: time.into(),
                subresource: subresource.into(),
                kept: Some(Value::Object(trie)),
                ..Entry::default()
            })),
            ..Entry::default()
        });
        store_entries(new, entry.into_iter().collect());
        return;
    };
    let mut list = update_entries(old, new, manager, subresource);
    let changed = changed_fields(new, old);
    for e in &mut list {
        // A field another manager keeps: still set, and not changed here.
        let keep = |p: &Path| !changed.contains(p) && is_leaf(new, p);
        if !e.fields.iter().all(keep) {
            e.fields_mut().retain(keep);
        }
    }
    if !changed.is_empty() {
        let api_version = new["apiVersion"].as_str().unwrap_or_default().to_string();
        let e = upsert(&mut list, manager, "Update", subresource);
        e.fields_mut().extend(changed);
        e.api_version = api_version;
        e.time = time.into();
    }
    store_entries(new, list);
}

/// Server-side apply of `applied` by `manager` onto `current` (None: create).
/// Returns the object to store, with managedFields settled.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subject: &Subject,
    time: &str,
) -> Result<Value, ApiError> {
    let applied_set = leaves(applied);
    let api_version = applied["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(current) = current else {
        let mut new = applied.clone();
        let mut list = Vec::new();
        let e = upsert(&mut list, manager, "Apply", "");
        *e.fields_mut() = applied_set;
        e.api_version = api_version;
        e.time = time.into();
        store_entries(&mut new, list);
        return Ok(new);
    };
    let mut list = entries(current);
    let mut conflicts = Vec::new();
    for path in applied_set
        .iter()
        .filter(|p| p.last().is_some_and(|l| l != "."))
    {
        if value_at(current, path).is_none_or(|c| Some(c) == value_at(applied, path)) {
            continue;
        }
        for e in list
            .iter()
            .filter(|e| e.manager != manager && e.fields.contains(path))
        {
            conflicts.push((e.manager.clone(), e.api_version.clone(), path.clone()));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(subject, &conflicts));
    }
    for (_, _, path) in &conflicts {
        for e in list.iter_mut().filter(|e| e.manager != manager) {
            if e.fields.contains(path) {
                e.fields_mut().remove(path);
            }
        }
    }
    let previous: FieldSet = list
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply")
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut new = strategic_merge(current, applied)?;
    // Fields this manager applied before and dropped now go, unless another
    // manager still owns them.
    for path in previous.difference(&applied_set) {
        let owned_elsewhere = list
            .iter()
            .any(|e| !(e.manager == manager && e.operation == "Apply") && e.fields.contains(path));
        if !owned_elsewhere {
            remove_at(&mut new, path);
        }
    }
    if let Some(m) = current["metadata"].as_object() {
        for field in ["managedFields", "resourceVersion"] {
            if let Some(v) = m.get(field) {
                new["metadata"][field] = v.clone();
            }
        }
    }
    let e = upsert(&mut list, manager, "Apply", "");
    // Re-applying the same configuration changes nothing, not even the time.
    if e.fields != applied_set || e.api_version != api_version {
        *e.fields_mut() = applied_set;
        e.api_version = api_version;
        e.time = time.into();
    }
    store_entries(&mut new, list);
    Ok(new)
}

fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if el != "." {
            s.push('[');
            s.push_str(el.get(2..).unwrap_or_default());
            s.push(']');
        }
    }
    s
}

fn conflict_error(subject: &Subject, conflicts: &[(String, String, Path)]) -> ApiError {
    let causes: Vec<Cause> = conflicts
        .iter()
        .map(|(m, v, p)| Cause {
            reason: "FieldManagerConflict",
            field: dotted(p),
            message: format!("conflict with {m:?} using {v}"),
        })
        .collect();
    let lines: Vec<String> = causes
        .iter()
        .map(|c| format!("- {}: {}", c.message, c.field))
        .collect();
    let n = conflicts.len();
    let message = format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        if n == 1 {
            format!("{}: {}", causes[0].message, causes[0].field)
        } else {
            format!("\n{}", lines.join("\n"))
        }
    );
    ApiError {
        causes,
        ..ApiError::new(Reason::Conflict, message).about(subject.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject {
            group: "apps".into(),
            resource: "deployments".into(),
            kind: "Deployment".into(),
            name: "web".into(),
        }
    }

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"name":"web","labels":{"app":"web"}},
            "spec":{"replicas":replicas,"template":{"spec":{"containers":[
                {"name":"app","image":image}]}}}})
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = leaves(&deploy(1, "nginx"));
        let trie = to_fields_v1(&set);
        assert_eq!(trie["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            trie["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]
                ["f:image"],
            json!({})
        );
        assert_eq!(trie["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert_eq!(from_fields_v1(&trie), set);
    }

    /// An entry is what kube-apiserver stores: these members, the
    /// subresource only when there is one.
    #[test]
    fn entries_have_upstreams_members() {
        let mut created = deploy(1, "nginx");
        record_update(
            None,
            &mut created,
            "kubectl-create",
            "",
            "2026-11-25T00:00:00Z",
        );
        let trie = to_fields_v1(&leaves(&deploy(1, "nginx")));
        assert_eq!(
            created["metadata"]["managedFields"],
            json!([{
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": "2026-11-25T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": trie,
            }])
        );
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(3);
        record_update(Some(&created), &mut scaled, "hpa", "scale", "t2");
        let entry = &scaled["metadata"]["managedFields"][1];
        assert_eq!(entry["subresource"], "scale");
        assert_eq!(entry["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert_eq!(entry.as_object().unwrap().len(), 7);
    }

    #[test]
    fn apply_owns_conflicts_and_forces() {
        let first = apply(None, &deploy(1, "nginx"), "alice", false, &subject(), "t").unwrap();
        assert_eq!(first["metadata"]["managedFields"][0]["operation"], "Apply");

        // Same values: shared ownership, no conflict.
        let shared = apply(
            Some(&first),
            &deploy(1, "nginx"),
            "bob",
            false,
            &subject(),
            "t",
        )
        .unwrap();
        assert_eq!(
            shared["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            2
        );

        // Another value for alice's field: conflict, unless forced.
        let err = apply(
            Some(&first),
            &deploy(3, "nginx"),
            "bob",
            false,
            &subject(),
            "t",
        )
        .unwrap_err();
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"alice\" using apps/v1: .spec.replicas"
        );
        let again = apply(
            Some(&first),
            &deploy(1, "nginx"),
            "alice",
            false,
            &subject(),
            "t9",
        )
        .unwrap();
        assert_eq!(
            again, first,
            "re-applying the same configuration is a no-op"
        );
        let forced = apply(
            Some(&first),
            &deploy(3, "nginx"),
            "bob",
            true,
            &subject(),
            "t",
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let alice = entries(&forced)
            .into_iter()
            .find(|e| e.manager == "alice")
            .unwrap();
        assert!(!alice
            .fields
            .contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let mut with_label = deploy(1, "nginx");
        with_label["metadata"]["labels"]["extra"] = json!("x");
        let first = apply(None, &with_label, "alice", false, &subject(), "t").unwrap();
        let second = apply(
            Some(&first),
            &deploy(1, "nginx"),
            "alice",
            false,
            &subject(),
            "t",
        )
        .unwrap();
        assert!(second["metadata"]["labels"]["extra"].is_null());
        assert_eq!(second["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let first = apply(None, &deploy(1, "nginx"), "alice", false, &subject(), "t").unwrap();
        let mut scaled = first.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&first), &mut scaled, "kubectl-scale", "", "t2");
        let list = entries(&scaled);
        let scaler = list.iter().find(|e| e.manager == "kubectl-scale").unwrap();
        assert_eq!(scaler.fields.len(), 1);
        // Now alice re-applying replicas=1 conflicts with the scaler.
        let err = apply(
            Some(&scaled),
            &deploy(1, "nginx"),
            "alice",
            false,
            &subject(),
            "t",
        )
        .unwrap_err();
        assert!(err.message.contains("kubectl-scale"), "{}", err.message);
    }

    /// A create's trie is built in place; it must be the trie of the set
    /// of leaves, whatever the object holds.
    #[test]
    fn a_created_objects_trie_is_the_trie_of_its_leaves() {
        let objects = [
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "n", "uid": "u",
                    "labels": {"app": "web", "tier": ""}, "annotations": {},
                    "finalizers": ["a/b", "c"],
                    "ownerReferences": [{"uid": "o1", "kind": "ReplicaSet", "name": "rs"}],
                    "generateName": "p-"},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "nginx", "args": ["-x", "1"],
                         "ports": [{"containerPort": 80, "protocol": "TCP"}],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {}}],
                         "resources": {}},
                        {"name": "side", "image": "busybox"}
                    ],
                    "volumes": [],
                    "tolerations": [{"key": "k", "operator": "Exists"}],
                    "nodeSelector": {"zone": "a"},
                    "terminationGracePeriodSeconds": 30,
                    "hostNetwork": false
                },
                "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
            }),
            // Items that repeat a key, lack it, or are not objects.
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "odd"},
                "spec": {"containers": [
                    {"name": "a", "x": {}}, {"name": "a", "x": {"y": 1}}, {"image": "none"}
                ], "initContainers": [1, 2], "ephemeralContainers": []}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {"k": "v"}, "binaryData": {}}),
        ];
        for v in objects {
            assert_eq!(
                Value::Object(leaves_trie(&v)),
                to_fields_v1(&leaves(&v)),
                "{v}"
            );
        }
        let mut created = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"k": "v"}});
        record_update(None, &mut created, "me", "", "t");
        assert_eq!(
            created["metadata"]["managedFields"],
            json!([{"manager": "me", "operation": "Update", "apiVersion": "v1", "time": "t",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:k": {}}}}])
        );
        let mut bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        record_update(None, &mut bare, "me", "", "t");
        assert!(bare["metadata"].get("managedFields").is_none(), "{bare}");
    }

    /// An update stores the tries of managers it leaves alone as they were,
    /// writes those it takes fields from anew, and writes a trie it read
    /// in another form (a leaf that is not `{}`) in the form it writes.
    #[test]
    fn updates_keep_untouched_entries_and_rewrite_the_rest() {
        let entry = |manager: &str, sub: &str, fields: Value| {
            json!({"manager": manager, "operation": "Update", "apiVersion": "v1",
                "time": "t0", "fieldsType": "FieldsV1", "fieldsV1": fields, "subresource": sub})
        };
        let ctrl = json!({"f:spec": {"f:nodeName": {}, "f:containers":
            {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}}});
        let mut old = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web"}, "managedFields": [
                entry("ctrl", "", ctrl.clone()),
                entry("odd", "", json!({"f:metadata": {"f:labels": {"f:app": null}}})),
                entry("node", "status", json!({"f:status": {"f:phase": {}}})),
            ]},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "nginx"}]},
            "status": {"phase": "Pending"}
        });
        old["metadata"]["managedFields"][0]
            .as_object_mut()
            .unwrap()
            .remove("subresource");
        old["metadata"]["managedFields"][1]
            .as_object_mut()
            .unwrap()
            .remove("subresource");
        let fields_of = |v: &Value, manager: &str| {
            v["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["manager"] == manager)
                .map(|e| e["fieldsV1"].clone())
        };

        let mut running = old.clone();
        running["status"]["phase"] = json!("Running");
        record_update(Some(&old), &mut running, "node", "status", "t1");
        assert_eq!(fields_of(&running, "ctrl"), Some(ctrl.clone()));
        assert_eq!(
            fields_of(&running, "odd"),
            Some(json!({"f:metadata": {"f:labels": {"f:app": {}}}}))
        );
        assert_eq!(
            fields_of(&running, "node"),
            Some(json!({"f:status": {"f:phase": {}}}))
        );

        let mut moved = old.clone();
        moved["spec"]["nodeName"] = json!("n2");
        record_update(Some(&old), &mut moved, "sched", "", "t1");
        let ctrl_now = fields_of(&moved, "ctrl").unwrap();
        assert_eq!(ctrl_now["f:spec"].get("f:nodeName"), None);
        assert_eq!(
            ctrl_now["f:spec"]["f:containers"],
            ctrl["f:spec"]["f:containers"]
        );
        assert_eq!(
            fields_of(&moved, "sched"),
            Some(json!({"f:spec": {"f:nodeName": {}}}))
        );
    }

    /// The fields an update changes are those whose value differs at the
    /// same path in the old object, each path looked up from the root
    /// (`value_at`), as the walk with cursors must find them: duplicate
    /// keys resolve to the first item, an item without its key to nothing.
    #[test]
    fn the_walk_finds_the_changed_fields_value_at_finds() {
        let base = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web"}, "finalizers": ["a", "b"],
                "ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "rs"}]},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "app", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "side", "image": "busybox", "args": ["x", "y"]}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}], "podIPs": [{"ip": "10.0.0.1"}]}
        });
        let edits: Vec<(&str, Value)> = vec![
            ("/status/phase", json!("Running")),
            ("/status/conditions/1/status", json!("True")),
            (
                "/status/conditions/1",
                json!({"type": "PodScheduled", "status": "False"}),
            ),
            ("/status/conditions/0/type", json!(null)),
            ("/status/conditions", json!([])),
            ("/status/podIPs/0/ip", json!("10.0.0.2")),
            ("/spec/containers/1/name", json!("app")),
            ("/spec/containers/0/ports/0/containerPort", json!(8080)),
            ("/spec/containers/1/args", json!(["y", "x"])),
            ("/metadata/finalizers", json!(["b", "c"])),
            ("/metadata/labels", json!({})),
            ("/metadata/ownerReferences/0/uid", json!("u2")),
            ("/spec/nodeName", json!({"nested": [1, 2]})),
        ];
        let mut variants = vec![base.clone()];
        for (i, (ptr, v)) in edits.iter().enumerate() {
            let mut one = base.clone();
            *one.pointer_mut(ptr).unwrap() = v.clone();
            variants.push(one.clone());
            // And with the next edit on top.
            if let Some((ptr2, v2)) = edits.get(i + 1) {
                if let Some(slot) = one.pointer_mut(ptr2) {
                    *slot = v2.clone();
                    variants.push(one);
                }
            }
        }
        for old in &variants {
            for new in &variants {
                let by_lookup: FieldSet = leaves(new)
                    .into_iter()
                    .filter(|p| value_at(old, p) != value_at(new, p))
                    .collect();
                assert_eq!(changed_fields(new, old), by_lookup, "old {old}\nnew {new}");
            }
        }
        // Following a path down an object finds exactly its leaves, for
        // every path any of the variants has (and their prefixes).
        let mut paths: FieldSet = variants.iter().flat_map(leaves).collect();
        let prefixes: Vec<Path> = paths
            .iter()
            .flat_map(|p| (0..p.len()).map(|n| p[..n].to_vec()))
            .collect();
        paths.extend(prefixes);
        paths.insert(vec!["f:apiVersion".into()]);
        paths.insert(vec!["f:metadata".into(), "f:name".into()]);
        for v in &variants {
            let all = leaves(v);
            for p in &paths {
                assert_eq!(is_leaf(v, p), all.contains(p), "{p:?} in {v}");
            }
        }
    }
}
