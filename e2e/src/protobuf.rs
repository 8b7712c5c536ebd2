//! Just enough of Kubernetes' protobuf encoding to accept the bodies kubectl's typed
//! generators send for the simplest kinds (`kubectl create namespace|configmap|secret|
//! serviceaccount`): the `k8s\0` envelope, ObjectMeta's common fields and those kinds'
//! own fields. Anything else is refused with 415.

use serde_json::{Map, Value, json};

use crate::defaults::base64;

const MAGIC: &[u8] = b"k8s\0";

/// One decoded field: number and either a varint or a length-delimited payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Iterates over the fields of a message; `None` on malformed input.
fn fields(mut buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut buf)?),
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let (payload, rest) = (buf.get(..len)?, buf.get(len..)?);
                buf = rest;
                Field::Bytes(payload)
            }
            1 => {
                buf = buf.get(8..)?;
                continue;
            }
            5 => {
                buf = buf.get(4..)?;
                continue;
            }
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    Some(out)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn text(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

/// A `map<string, string>` or `map<string, bytes>` entry.
fn map_entry(b: &[u8]) -> Option<(String, Vec<u8>)> {
    let (mut key, mut value) = (String::new(), Vec::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k)?,
            (2, Field::Bytes(v)) => value = v.to_vec(),
            _ => {}
        }
    }
    Some((key, value))
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => {
                meta.insert("name".into(), json!(text(v)?));
            }
            (2, Field::Bytes(v)) => {
                meta.insert("generateName".into(), json!(text(v)?));
            }
            (3, Field::Bytes(v)) => {
                meta.insert("namespace".into(), json!(text(v)?));
            }
            (11, Field::Bytes(v)) => {
                let (k, val) = map_entry(v)?;
                labels.insert(k, json!(text(&val)?));
            }
            (12, Field::Bytes(v)) => {
                let (k, val) = map_entry(v)?;
                annotations.insert(k, json!(text(&val)?));
            }
            (14, Field::Bytes(v)) => finalizers.push(json!(text(v)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(meta))
}

/// Decodes a protobuf request body for `kind`; `None` when the kind is not one of the
/// supported ones or the bytes are malformed.
pub(crate) fn decode(body: &[u8], kind: &str) -> Option<Value> {
    let envelope = body.strip_prefix(MAGIC)?;
    let raw = fields(envelope)?
        .into_iter()
        .find_map(|(n, f)| match (n, f) {
            (2, Field::Bytes(raw)) => Some(raw),
            _ => None,
        })?;
    let mut obj = json!({"apiVersion": "v1", "kind": kind});
    let (mut data, mut binary, mut strings) = (Map::new(), Map::new(), Map::new());
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(m)) => obj["metadata"] = object_meta(m)?,
            ("ConfigMap", 2, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                data.insert(k, json!(text(&v)?));
            }
            ("ConfigMap", 3, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                binary.insert(k, json!(base64(&v)));
            }
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                obj["immutable"] = json!(v != 0)
            }
            ("Secret", 2, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                data.insert(k, json!(base64(&v)));
            }
            ("Secret", 3, Field::Bytes(t)) => obj["type"] = json!(text(t)?),
            ("Secret", 4, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                strings.insert(k, json!(text(&v)?));
            }
            ("ServiceAccount", 4, Field::Varint(v)) => {
                obj["automountServiceAccountToken"] = json!(v != 0)
            }
            ("Namespace" | "ConfigMap" | "Secret" | "ServiceAccount", _, _) => {}
            _ => return None,
        }
    }
    for (key, map) in [
        ("data", data),
        ("binaryData", binary),
        ("stringData", strings),
    ] {
        if !map.is_empty() {
            obj[key] = Value::Object(map);
        }
    }
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_config_map() {
        let meta = [
            field(1, b"cfg"),
            field(11, &[field(1, b"app"), field(2, b"pem")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert_eq!(
            decode(&body, "ConfigMap"),
            Some(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"app": "pem"}}, "data": {"k": "v"}})
            )
        );
        assert_eq!(decode(&body, "Deployment"), None);
        assert_eq!(decode(b"k8s\0\xff\xff", "ConfigMap"), None);
        assert_eq!(decode(b"junk", "ConfigMap"), None);
    }
}
