//! Caches keep objects without `metadata.managedFields`, as
//! controller-runtime's `TransformStripManagedFields` does: no controller
//! reads them, and a pod's are a good part of its bytes (one entry per
//! writer, each listing every field it set). In a profile of the
//! deployment benchmark's rolling update, decoding them into typed
//! `ManagedFieldsEntry` values and dropping them again took about 6% of the
//! masters' CPU: every master's caches decode every pod change.
//!
//! The member is cut out of the JSON text before it is decoded: a scan of
//! the top-level object to its `metadata` member and of that object's
//! members, skipping over values without building them. Text that is not
//! an object of that shape is returned as it is, for the decoder to judge.
//! Writes never depend on it: the registry keeps managedFields from the
//! stored object, whatever a write carries.

use std::borrow::Cow;

/// `json` without the top-level `metadata.managedFields` member.
pub fn without_managed_fields(json: &[u8]) -> Cow<'_, [u8]> {
    match managed_fields_span(json) {
        Some((from, to)) => {
            let mut out = Vec::with_capacity(json.len() - (to - from));
            out.extend_from_slice(&json[..from]);
            out.extend_from_slice(&json[to..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(json),
    }
}

/// The bytes to remove: the member and one comma beside it.
fn managed_fields_span(json: &[u8]) -> Option<(usize, usize)> {
    let mut top = Members::of(json, 0)?;
    while let Some(m) = top.next_member()? {
        if m.key == b"metadata" {
            let mut meta = Members::of(json, m.value.0)?;
            while let Some(f) = meta.next_member()? {
                if f.key == b"managedFields" {
                    return Some(span_with_comma(json, f.start, f.value.1));
                }
            }
            return None;
        }
    }
    None
}

/// `[start, end)` of a member plus the comma after it, or else the one
/// before it, so the object stays well formed.
fn span_with_comma(json: &[u8], start: usize, end: usize) -> (usize, usize) {
    let after = skip_ws(json, end);
    if json.get(after) == Some(&b',') {
        return (start, after + 1);
    }
    let mut before = start;
    while before > 0 && json[before - 1].is_ascii_whitespace() {
        before -= 1;
    }
    if before > 0 && json[before - 1] == b',' {
        (before - 1, end)
    } else {
        (start, end)
    }
}

struct Member<'a> {
    /// Where the key's opening quote is.
    start: usize,
    key: &'a [u8],
    /// `[from, to)` of the value.
    value: (usize, usize),
}

/// The members of the object at `at`, one at a time.
struct Members<'a> {
    json: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Members<'a> {
    fn of(json: &'a [u8], at: usize) -> Option<Self> {
        let at = skip_ws(json, at);
        (json.get(at) == Some(&b'{')).then_some(Self {
            json,
            pos: at + 1,
            done: false,
        })
    }

    /// The next member; `Some(None)` at the object's end, `None` on text
    /// that is not JSON.
    fn next_member(&mut self) -> Option<Option<Member<'a>>> {
        if self.done {
            return Some(None);
        }
        let json = self.json;
        let start = skip_ws(json, self.pos);
        match json.get(start)? {
            b'}' => {
                self.done = true;
                return Some(None);
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = string_end(json, start)?;
        let colon = skip_ws(json, key_end);
        if json.get(colon) != Some(&b':') {
            return None;
        }
        let from = skip_ws(json, colon + 1);
        let to = value_end(json, from)?;
        let next = skip_ws(json, to);
        match json.get(next)? {
            b',' => self.pos = next + 1,
            b'}' => self.done = true,
            _ => return None,
        }
        Some(Some(Member {
            start,
            key: &json[start + 1..key_end - 1],
            value: (from, to),
        }))
    }
}

fn skip_ws(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Just past the closing quote of the string whose opening quote is at `at`.
fn string_end(json: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match json.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Just past the value that starts at `at`.
fn value_end(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => string_end(json, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match json.get(i)? {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while json
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
            {
                i += 1;
            }
            (i > at).then_some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// What stripping must give: the parsed value without the member.
    fn expected(text: &str) -> Value {
        let mut v: Value = serde_json::from_str(text).unwrap();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        v
    }

    fn stripped(text: &str) -> Value {
        let out = without_managed_fields(text.as_bytes());
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{text} gave {}: {e}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn the_member_goes_wherever_it_stands() {
        let mf = r#"[{"manager":"kubelet","operation":"Update","fieldsV1":{"f:status":{"f:phase":{}}}}]"#;
        for text in [
            format!(r#"{{"metadata":{{"managedFields":{mf},"name":"a"}},"spec":{{}}}}"#),
            format!(r#"{{"kind":"Pod","metadata":{{"name":"a","managedFields":{mf},"uid":"u"}}}}"#),
            format!(r#"{{"metadata":{{"name":"a","managedFields":{mf}}}}}"#),
            format!(r#"{{"metadata":{{"managedFields":{mf}}}}}"#),
            format!(
                "{{ \"apiVersion\" : \"v1\" ,\n \"metadata\" : {{ \"name\" : \"a\" ,\n  \"managedFields\" : {mf} \n }} }}"
            ),
            r#"{"metadata":{"name":"a","managedFields":[],"labels":{"x":"y"}}}"#.to_string(),
        ] {
            let out = stripped(&text);
            assert_eq!(out, expected(&text), "{text}");
            assert!(out["metadata"].get("managedFields").is_none(), "{text}");
        }
    }

    #[test]
    fn look_alikes_elsewhere_stay() {
        for text in [
            // In a string, under spec, in an annotation, escaped quotes.
            r#"{"spec":{"managedFields":[1]},"metadata":{"name":"a"}}"#,
            r#"{"metadata":{"name":"a","annotations":{"k":"\"managedFields\":[]"}},"data":{"managedFields":"x"}}"#,
            r#"{"status":{"m":"a \\\" b"},"metadata":{"name":"a\"b","managedFields":[{"a":"}]"}]}}"#,
            r#"{"data":{"metadata":{"managedFields":1}},"metadata":{"name":"a"}}"#,
        ] {
            assert_eq!(stripped(text), expected(text), "{text}");
        }
        let nested = json!({"data": {"metadata": {"managedFields": 1}}, "metadata": {"name": "a"}});
        assert_eq!(
            stripped(&nested.to_string()),
            nested,
            "only the top level's"
        );
    }

    #[test]
    fn anything_else_is_left_to_the_decoder() {
        for text in [
            "",
            "[]",
            r#"{"metadata":"x"}"#,
            r#"{"metadata":{"name":"a""#,
            r#"{"metadata":{"managedFields":[}"#,
            "not json",
        ] {
            assert!(
                matches!(without_managed_fields(text.as_bytes()), Cow::Borrowed(_)),
                "{text}"
            );
        }
    }
}
