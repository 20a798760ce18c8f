//! Kubernetes' protobuf encoding for the built-in kinds the sandbox serves, as kubectl sends
//! them (`application/vnd.kubernetes.protobuf`): the `k8s\0` envelope (runtime.Unknown)
//! around a Secret, a ConfigMap or a Namespace. Answers are JSON, which the client also accepts.

use base64::Engine;
use serde_json::{Map, Value, json};

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Skip,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = self.varint()? as usize;
                let end = self.pos.checked_add(len).filter(|e| *e <= self.buf.len()).ok_or("truncated field")?;
                let b = &self.buf[self.pos..end];
                self.pos = end;
                Field::Bytes(b)
            }
            1 => {
                self.pos += 8;
                Field::Skip
            }
            5 => {
                self.pos += 4;
                Field::Skip
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn map_entry(b: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut r = Reader::new(b);
    let (mut k, mut v) = (String::new(), Vec::new());
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x),
            (2, Field::Bytes(x)) => v = x.to_vec(),
            _ => {}
        }
    }
    Ok((k, v))
}

/// Adds one `map<string, bytes>` entry to `into`, as text or as base64.
fn put_entry(into: &mut Map<String, Value>, entry: &[u8], base64: bool) -> Result<(), String> {
    let (k, v) = map_entry(entry)?;
    let value = if base64 { base64::engine::general_purpose::STANDARD.encode(v) } else { string(&v) };
    into.insert(k, json!(value));
    Ok(())
}

/// Sets `obj[field]` to `map` unless it is empty (the API leaves empty maps out).
fn set_map(obj: &mut Value, field: &str, map: Map<String, Value>) {
    if !map.is_empty() {
        obj[field] = Value::Object(map);
    }
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut m = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                m.insert("name".into(), json!(string(x)));
            }
            (2, Field::Bytes(x)) => {
                m.insert("generateName".into(), json!(string(x)));
            }
            (3, Field::Bytes(x)) => {
                m.insert("namespace".into(), json!(string(x)));
            }
            (6, Field::Bytes(x)) => {
                m.insert("resourceVersion".into(), json!(string(x)));
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                labels.insert(k, json!(string(&v)));
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                annotations.insert(k, json!(string(&v)));
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(m))
}

/// A message whose fields 1.. are strings, named in order.
fn strings(b: &[u8], names: &[&str]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut m = Map::new();
    while let Some((n, f)) = r.next()? {
        if let (Some(name), Field::Bytes(x)) = (names.get((n as usize).wrapping_sub(1)), f) {
            m.insert((*name).to_string(), json!(string(x)));
        }
    }
    Ok(Value::Object(m))
}

/// `SelfSubjectAccessReviewSpec`: resourceAttributes = 1, nonResourceAttributes = 2.
fn access_review_spec(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut spec = Map::new();
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                let attrs = ["namespace", "verb", "group", "version", "resource", "subresource", "name"];
                spec.insert("resourceAttributes".into(), strings(x, &attrs)?);
            }
            (2, Field::Bytes(x)) => {
                spec.insert("nonResourceAttributes".into(), strings(x, &["path", "verb"])?);
            }
            _ => {}
        }
    }
    Ok(Value::Object(spec))
}

/// Decodes an enveloped built-in object into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let inner = body.strip_prefix(b"k8s\0").ok_or("not a Kubernetes protobuf envelope")?;
    let mut r = Reader::new(inner);
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((n, f)) = t.next()? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = string(x),
                        (2, Field::Bytes(x)) => kind = string(x),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {}});
    let mut r = Reader::new(raw);
    match kind.as_str() {
        "Secret" => {
            let (mut data, mut string_data) = (Map::new(), Map::new());
            while let Some((n, f)) = r.next()? {
                match (n, f) {
                    (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
                    (2, Field::Bytes(x)) => put_entry(&mut data, x, true)?,
                    (3, Field::Bytes(x)) => obj["type"] = json!(string(x)),
                    (4, Field::Bytes(x)) => put_entry(&mut string_data, x, false)?,
                    (5, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
                    _ => {}
                }
            }
            set_map(&mut obj, "data", data);
            set_map(&mut obj, "stringData", string_data);
        }
        "ConfigMap" => {
            let (mut data, mut binary) = (Map::new(), Map::new());
            while let Some((n, f)) = r.next()? {
                match (n, f) {
                    (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
                    (2, Field::Bytes(x)) => put_entry(&mut data, x, false)?,
                    (3, Field::Bytes(x)) => put_entry(&mut binary, x, true)?,
                    (4, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
                    _ => {}
                }
            }
            set_map(&mut obj, "data", data);
            set_map(&mut obj, "binaryData", binary);
        }
        "Namespace" => {
            while let Some((n, f)) = r.next()? {
                if let (1, Field::Bytes(x)) = (n, f) {
                    obj["metadata"] = object_meta(x)?;
                }
            }
        }
        // authorization/v1: spec = 2 in both reviews; the status is the server's to fill.
        "SelfSubjectAccessReview" | "SelfSubjectRulesReview" => {
            while let Some((n, f)) = r.next()? {
                match (n, f) {
                    (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
                    (2, Field::Bytes(x)) if kind == "SelfSubjectAccessReview" => obj["spec"] = access_review_spec(x)?,
                    (2, Field::Bytes(x)) => obj["spec"] = strings(x, &["namespace"])?,
                    _ => {}
                }
            }
        }
        // authentication/v1: metadata only; the status (userInfo) is the server's.
        "SelfSubjectReview" => {
            while let Some((n, f)) = r.next()? {
                if let (1, Field::Bytes(x)) = (n, f) {
                    obj["metadata"] = object_meta(x)?;
                }
            }
        }
        other => return Err(format!("protobuf is not served for {other:?} by the sandbox; send JSON")),
    }
    Ok(obj)
}
