//! Stamping `metadata.resourceVersion` into an object's JSON without parsing
//! it into a tree.
//!
//! The store keeps every object in one canonical encoding: serde_json's
//! encoding of a `serde_json::Value` (no whitespace, the keys of every object
//! in byte order, integers as written, only `"`, `\` and control characters
//! escaped). The registry hands the store objects in that encoding, and every
//! stored object is in it.
//!
//! ```text
//!   bytes ─► scan (one pass, no allocation) ─┬─ canonical, name/namespace match ─► splice "rev" in
//!                                            └─ anything else ──────────────────► None: parse, set, re-encode
//! ```
//!
//! What must stay true: whenever `scan` answers `Some`, splicing gives
//! exactly the bytes that parsing into a `Value`, setting
//! `metadata.resourceVersion` and re-encoding give (`apply`'s slow path). So
//! every replica writes the same bytes from the same log entry, whichever
//! path it takes and whenever the entry was written. `scan` answers `None`
//! for anything it is not sure of (whitespace, floats, very large integers,
//! deep nesting, duplicate keys, odd metadata): those take the slow path,
//! which also gives their errors. Keys with escapes (managedFields' list keys
//! such as `k:{"type":"Ready"}`) are compared unescaped, as their order is
//! that of their text.

use std::borrow::Cow;

use bytes::Bytes;

use super::{ResourceKey, Revision};

/// Deeper than this is left to the slow path (serde_json refuses past 128).
const MAX_DEPTH: usize = 64;

const RESOURCE_VERSION: &[u8] = b"resourceVersion";

/// Where `metadata.resourceVersion` is, or would go, in canonical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The value's span (a key is present with some value).
    Value { start: usize, end: usize },
    /// Absent: insert the member at `at`; `comma_before` when a member
    /// precedes it, else one follows it.
    Insert { at: usize, comma_before: bool },
}

/// Canonical bytes of an object whose metadata names its key, ready to be
/// stamped at any revision.
#[derive(Debug, Clone)]
pub struct Stampable<'a> {
    bytes: &'a [u8],
    slot: Slot,
}

impl<'a> Stampable<'a> {
    /// `Some` when `bytes` are canonical and their `metadata.name` (and
    /// `metadata.namespace`, if present) are plain strings naming `key`.
    pub fn scan(key: &ResourceKey, bytes: &'a [u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok()?;
        let mut s = Scanner { b: bytes, i: 0 };
        let meta = s.top_level()?;
        if s.i != bytes.len() {
            return None;
        }
        if meta.name? != key.name.as_bytes() {
            return None;
        }
        match (meta.namespace, key.namespace.as_deref()) {
            (None, _) => {}
            (Some(ns), Some(want)) if ns == want.as_bytes() => {}
            _ => return None,
        }
        Some(Self {
            bytes,
            slot: meta.slot?,
        })
    }

    /// The bytes with `metadata.resourceVersion` set to `rev`.
    pub fn at(&self, rev: Revision) -> Bytes {
        let rv = rev.to_string();
        let b = self.bytes;
        let mut out = Vec::with_capacity(b.len() + rv.len() + RESOURCE_VERSION.len() + 6);
        match self.slot {
            Slot::Value { start, end } => {
                out.extend_from_slice(&b[..start]);
                push_string(&mut out, &rv);
                out.extend_from_slice(&b[end..]);
            }
            Slot::Insert { at, comma_before } => {
                out.extend_from_slice(&b[..at]);
                if comma_before {
                    out.push(b',');
                }
                push_string(&mut out, "resourceVersion");
                out.push(b':');
                push_string(&mut out, &rv);
                if !comma_before {
                    out.push(b',');
                }
                out.extend_from_slice(&b[at..]);
            }
        }
        Bytes::from(out)
    }
}

/// A string that needs no escaping (the callers' are ASCII letters and digits).
fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// What the scan of `metadata` found.
#[derive(Default)]
struct Meta<'a> {
    name: Option<&'a [u8]>,
    namespace: Option<&'a [u8]>,
    slot: Option<Slot>,
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// The top-level object; its `metadata` must be an object.
    fn top_level(&mut self) -> Option<Meta<'a>> {
        let mut meta = None;
        self.members(1, |s, key, _| {
            if key == b"metadata" {
                meta = Some(s.metadata()?);
                Some(())
            } else {
                s.value(1)
            }
        })?;
        meta
    }

    fn metadata(&mut self) -> Option<Meta<'a>> {
        let mut meta = Meta::default();
        let mut last_end = None;
        self.members(2, |s, key, key_start| {
            if meta.slot.is_none() && key > RESOURCE_VERSION {
                meta.slot = Some(Slot::Insert {
                    at: key_start,
                    comma_before: false,
                });
            }
            match key {
                b"name" => meta.name = Some(s.plain_string()?),
                b"namespace" => meta.namespace = Some(s.plain_string()?),
                b"resourceVersion" => {
                    let start = s.i;
                    s.value(2)?;
                    meta.slot = Some(Slot::Value { start, end: s.i });
                }
                _ => s.value(2)?,
            }
            last_end = Some(s.i);
            Some(())
        })?;
        if meta.slot.is_none() {
            // Absent: after the last member. (An empty metadata has no
            // name, so the slow path answers it.)
            meta.slot = Some(Slot::Insert {
                at: last_end?,
                comma_before: true,
            });
        }
        Some(meta)
    }

    /// An object's members in canonical order; `member` reads each value,
    /// given its key (unescaped) and where the key's opening quote is.
    fn members(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &[u8], usize) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        let mut prev: Option<Cow<'a, [u8]>> = None;
        loop {
            let start = self.i;
            let (raw, escaped) = self.string()?;
            // Keys are ordered by their text, not by how it is escaped
            // (`a"b` sorts before `a#`, though `\` sorts after `#`).
            let key = if escaped {
                Cow::Owned(unescape(raw))
            } else {
                Cow::Borrowed(raw)
            };
            if prev.as_deref().is_some_and(|p| p >= &*key) {
                return None;
            }
            self.eat(b':')?;
            member(self, &key, start)?;
            prev = Some(key);
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.members(depth + 1, |s, _, _| s.value(depth + 1)),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// Integers serde_json keeps as they are written: a u64, or a negative
    /// number down to i64::MIN. Floats, exponents, `-0` and anything beyond
    /// those ranges (serde_json makes them floats) are left to the slow path.
    fn integer(&mut self) -> Option<()> {
        let negative = self.eat(b'-').is_some();
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        let limit: &[u8] = if negative {
            b"9223372036854775808"
        } else {
            b"18446744073709551615"
        };
        let ok = match digits {
            [] => false,
            [b'0'] => !negative,
            [b'0', ..] => false,
            // Same length: byte order is numeric order.
            d => d.len() < limit.len() || (d.len() == limit.len() && d <= limit),
        };
        if !ok || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(())
    }

    /// A string with no escapes; its content.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        let (content, escaped) = self.string()?;
        (!escaped).then_some(content)
    }

    /// A string as serde_json writes it: its raw content and whether it
    /// holds an escape.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'"' => {
                    let content = &self.b[start..self.i];
                    self.i += 1;
                    return Some((content, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !canonical_control_escape(hex) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }
}

/// The text of a string's raw content that `Scanner::string` accepted (so
/// every escape in it is one serde_json writes).
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some((&e, tail)) = rest.split_first() else {
            break;
        };
        rest = tail;
        out.push(match e {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                // `00XX`, XX lowercase hex (checked by the scan).
                let (hex, tail) = rest.split_at(rest.len().min(4));
                rest = tail;
                hex.iter().fold(0u8, |n, &d| {
                    let v = match d {
                        b'a'..=b'f' => d - b'a' + 10,
                        _ => d.wrapping_sub(b'0'),
                    };
                    n.wrapping_mul(16).wrapping_add(v)
                })
            }
            other => other, // `"` and `\\`
        });
    }
    out
}

/// `\u00XX` is how serde_json writes a control character without a short
/// escape, with lowercase hex digits.
fn canonical_control_escape(hex: &[u8]) -> bool {
    let [b'0', b'0', hi @ (b'0' | b'1'), lo] = *hex else {
        return false;
    };
    let lo = match lo {
        b'0'..=b'9' => lo - b'0',
        b'a'..=b'f' => lo - b'a' + 10,
        _ => return false,
    };
    let c = (hi - b'0') * 16 + lo;
    !matches!(c, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn key(ns: Option<&str>, name: &str) -> ResourceKey {
        ResourceKey::new("", "configmaps", ns, name)
    }

    /// What the slow path writes: parse, set, re-encode.
    fn slow(bytes: &[u8], rev: Revision) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(bytes).unwrap();
        v["metadata"]["resourceVersion"] = Value::String(rev.to_string());
        serde_json::to_vec(&v).unwrap()
    }

    /// Scans the canonical encoding of `v` and checks that splicing gives
    /// the slow path's bytes at several revisions.
    fn same_as_slow(k: &ResourceKey, v: &Value) {
        let bytes = serde_json::to_vec(v).unwrap();
        let s = Stampable::scan(k, &bytes).unwrap_or_else(|| {
            panic!(
                "not taken as canonical: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        for rev in [0, 1, 9, 10, 123_456_789, u64::MAX] {
            let rev = Revision(rev);
            assert_eq!(
                String::from_utf8(s.at(rev).to_vec()).unwrap(),
                String::from_utf8(slow(&bytes, rev)).unwrap()
            );
        }
    }

    #[test]
    fn splicing_gives_the_slow_paths_bytes() {
        let k = key(Some("default"), "a");
        // Absent, before a later key, after the last key.
        same_as_slow(
            &k,
            &json!({"kind":"ConfigMap","metadata":{"name":"a","namespace":"default"},"data":{"k":"v"}}),
        );
        same_as_slow(
            &k,
            &json!({"metadata":{"labels":{"x":"y"},"name":"a","uid":"u-1"},"z":1}),
        );
        same_as_slow(&k, &json!({"metadata":{"name":"a","selfLink":"/x"}}));
        // Present with any value, first or last.
        for rv in [
            json!("41"),
            json!(41),
            json!(null),
            json!({"a":[1]}),
            json!(""),
        ] {
            same_as_slow(&k, &json!({"metadata":{"name":"a","resourceVersion":rv}}));
            same_as_slow(
                &k,
                &json!({"metadata":{"name":"a","resourceVersion":rv,"uid":"u"}}),
            );
        }
        // A nested metadata or resourceVersion is not the object's.
        same_as_slow(
            &k,
            &json!({"metadata":{"name":"a"},"spec":{"template":{"metadata":{"name":"b","resourceVersion":"3"}}},"resourceVersion":"7"}),
        );
        // Cluster-scoped: no namespace in the key or the object.
        same_as_slow(&key(None, "n1"), &json!({"metadata":{"name":"n1"}}));
    }

    #[test]
    fn escapes_and_odd_values_are_canonical_as_serde_json_writes_them() {
        let k = key(Some("default"), "a");
        let controls: String = (0u8..0x20).map(char::from).collect();
        same_as_slow(
            &k,
            &json!({"metadata":{"name":"a","annotations":{"c":controls,"q":"\"\\/","u":"é — 日本 \u{7f} \u{10FFFF}"}},
                "n":[0,1,-1,18446744073709551615u64,i64::MIN,9999999999999999999u64,-999999999999999999i64,true,false,null,[],{}],
                "o":{"q":"x\"y"}}),
        );
    }

    #[test]
    fn escaped_keys_are_ordered_by_their_text() {
        let k = key(Some("default"), "a");
        // managedFields name list items by their keys: `k:{"type":"Ready"}`.
        same_as_slow(
            &k,
            &json!({"metadata":{"name":"a","managedFields":[{"fieldsV1":{"f:status":{
                "f:conditions":{".":{},"k:{\"type\":\"Ready\"}":{"f:status":{}},"k:{\"type\":\"PodScheduled\"}":{}}}}}]},
                "a\"b":1,"a#":2,"a\\":3,"a\u{1}":4,"a\n":5,"a\u{1f}":6,"a":7}),
        );
        // Metadata's own keys, escaped ones among them.
        same_as_slow(
            &k,
            &json!({"metadata":{"\"":1,"name":"a","resourceVersion\n":2,"z\\":3}}),
        );
    }

    #[test]
    fn anything_not_canonical_is_left_to_the_slow_path() {
        let k = key(Some("default"), "a");
        for text in [
            r#"{"metadata": {"name":"a"}}"#,
            r#" {"metadata":{"name":"a"}}"#,
            r#"{"metadata":{"name":"a"}} "#,
            r#"{"metadata":{"name":"a"}}x"#,
            r#"{"z":1,"metadata":{"name":"a"}}"#,
            r#"{"metadata":{"namespace":"default","name":"a"}}"#,
            r#"{"a":1,"a":2,"metadata":{"name":"a"}}"#,
            r#"{"metadata":{"name":"a"},"x":"\/"}"#,
            r#"{"metadata":{"name":"a"},"x":"\u0041"}"#,
            r#"{"metadata":{"name":"a"},"x":"\u001F"}"#,
            r#"{"metadata":{"name":"a"},"x":"\u000a"}"#,
            r#"{"metadata":{"name":"a"},"x":1.0}"#,
            r#"{"metadata":{"name":"a"},"x":1e3}"#,
            r#"{"metadata":{"name":"a"},"x":-0}"#,
            r#"{"metadata":{"name":"a"},"x":18446744073709551616}"#,
            r#"{"metadata":{"name":"a"},"x":-9223372036854775809}"#,
            r#"{"metadata":{"name":"a"},"x":100000000000000000000}"#,
            r#"{"metadata":{"name":"a"},"x":01}"#,
            r#"{"metadata":{"name":"\u0061"}}"#,
            r#"{"metadata":{"name":"a","namespace":"other"}}"#,
            r#"{"metadata":{"name":"a","namespace":7}}"#,
            r#"{"metadata":{"name":"b"}}"#,
            r#"{"metadata":{}}"#,
            r#"{"metadata":[]}"#,
            r#"{"kind":"x"}"#,
            r#"[{"metadata":{"name":"a"}}]"#,
            r#"{"metadata":{"name":"a"},"x":"unterminated}"#,
            r#"{"metadata":{"name":"a"},"x":tru}"#,
            // In byte order as escaped, but not as text: `a"b` < `a#`.
            r#"{"a#":1,"a\"b":2,"metadata":{"name":"a"}}"#,
            // The same key twice, escaped.
            r#"{"a\"":1,"a\"":2,"metadata":{"name":"a"}}"#,
            "",
        ] {
            assert!(
                Stampable::scan(&k, text.as_bytes()).is_none(),
                "taken as canonical: {text}"
            );
        }
        let deep = format!(
            r#"{{"metadata":{{"name":"a"}},"x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(Stampable::scan(&k, deep.as_bytes()).is_none());
        assert!(Stampable::scan(&k, b"{\"metadata\":{\"name\":\"a\"},\"x\":\"\xff\"}").is_none());
    }

    /// Random documents: whatever serde_json writes for a `Value` is taken
    /// as canonical (unless it holds a float) and spliced to the same bytes.
    #[test]
    fn random_documents_splice_as_the_slow_path() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let k = key(Some("ns"), "obj");
        for _ in 0..2_000 {
            let mut meta = serde_json::Map::new();
            meta.insert("name".into(), json!("obj"));
            if next().is_multiple_of(2) {
                meta.insert("namespace".into(), json!("ns"));
            }
            for _ in 0..next() % 5 {
                let v = random_value(&mut next, 2);
                meta.insert(random_key(&mut next), v);
            }
            let mut top = serde_json::Map::new();
            top.insert("metadata".into(), Value::Object(meta));
            for _ in 0..next() % 4 {
                let v = random_value(&mut next, 3);
                top.insert(random_key(&mut next), v);
            }
            // A random key may have replaced metadata or its name.
            let v = Value::Object(top);
            if v["metadata"]["name"] == "obj"
                && matches!(
                    v["metadata"].get("namespace"),
                    None | Some(Value::String(_))
                )
                && v["metadata"].get("namespace").is_none_or(|n| n == "ns")
            {
                same_as_slow(&k, &v);
            }
        }
    }

    fn random_key(next: &mut impl FnMut() -> u64) -> String {
        const KEYS: &[&str] = &[
            "a",
            "labels",
            "name",
            "namespace",
            "resourceVersion",
            "resourceVersio",
            "resourceVersionX",
            "uid",
            "zz",
            "metadata",
            "é",
            "A",
            "",
            "a\"b",
            "a#",
            "\\",
            "\u{1}",
            "resourceVersion\t",
            "k:{\"type\":\"Ready\"}",
        ];
        KEYS[(next() % KEYS.len() as u64) as usize].to_string()
    }

    fn random_value(next: &mut impl FnMut() -> u64, depth: u32) -> Value {
        match next() % if depth == 0 { 5 } else { 7 } {
            0 => Value::Null,
            1 => Value::Bool(next().is_multiple_of(2)),
            2 => json!(next() >> (next() % 64)),
            3 => json!(-((next() >> 2) as i64) - 1),
            4 => {
                let chars = [
                    'a', '"', '\\', '/', '\n', '\u{1}', '\u{1f}', 'é', '\u{7f}', '日',
                ];
                let s: String = (0..next() % 6)
                    .map(|_| chars[(next() % chars.len() as u64) as usize])
                    .collect();
                Value::String(s)
            }
            5 => Value::Array(
                (0..next() % 4)
                    .map(|_| random_value(next, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..next() % 4)
                    .map(|_| (random_key(next), random_value(next, depth - 1)))
                    .collect(),
            ),
        }
    }
}
