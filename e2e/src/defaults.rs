//! The API server's defaults for the built-in kinds the project creates, so objects read
//! back as they would from a real cluster (and controllers comparing them see the same).
//! Also the Secret `stringData` merge and Service cluster IPs.

use serde_json::{Map, Value, json};

use crate::resources::Resource;

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    v.get_mut(key).and_then(Value::as_object_mut)
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise.
fn pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match name.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container_defaults(c: &mut Value) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(m) = c.as_object_mut() {
        set_default(m, "imagePullPolicy", json!(pull_policy(&image)));
        set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(m, "terminationMessagePolicy", json!("File"));
        set_default(m, "resources", json!({}));
    }
    for port in c
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(p) = port.as_object_mut() {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

fn pod_spec_defaults(spec: &mut Value) {
    if let Some(m) = spec.as_object_mut() {
        set_default(m, "restartPolicy", json!("Always"));
        set_default(m, "terminationGracePeriodSeconds", json!(30));
        set_default(m, "dnsPolicy", json!("ClusterFirst"));
        set_default(m, "schedulerName", json!("default-scheduler"));
        set_default(m, "securityContext", json!({}));
    }
    for key in ["containers", "initContainers"] {
        for c in spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            container_defaults(c);
        }
    }
}

fn template_defaults(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec_defaults(spec);
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as Secret `data` holds.
pub(crate) fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional), as Secret `data` holds it; `None` when
/// `text` is not base64.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let sextet = BASE64.iter().position(|b| *b == c)?;
        acc = (acc << 6) | u32::try_from(sextet).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// Applies defaults to a built-in object being written; `next_ip` hands out Service IPs.
pub(crate) fn apply(
    res: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
    next_ip: &mut dyn FnMut() -> String,
) {
    if res.from_crd {
        return;
    }
    match (res.group.as_str(), res.kind.as_str()) {
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec_defaults(spec);
                if let Some(m) = spec.as_object_mut() {
                    set_default(m, "serviceAccountName", json!("default"));
                }
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                );
            }
            template_defaults(obj);
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
                );
            }
            template_defaults(obj);
        }
        ("", "Service") => {
            let kept_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
            if obj.get("spec").is_none() {
                obj["spec"] = json!({});
            }
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                if spec
                    .get("clusterIP")
                    .is_none_or(|ip| ip.as_str().is_none_or(str::is_empty))
                {
                    let ip = kept_ip.unwrap_or_else(|| json!(next_ip()));
                    spec.insert("clusterIP".into(), ip.clone());
                    spec.insert("clusterIPs".into(), json!([ip]));
                }
                for port in spec
                    .get_mut("ports")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    let number = port.get("port").cloned();
                    if let (Some(p), Some(n)) = (port.as_object_mut(), number) {
                        set_default(p, "protocol", json!("TCP"));
                        set_default(p, "targetPort", n);
                    }
                }
            }
        }
        ("", "Secret") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
                // stringData is write-only: merged into data, base64-encoded.
                if let Some(Value::Object(strings)) = m.remove("stringData") {
                    let data = m.entry("data").or_insert_with(|| json!({}));
                    if let Some(d) = data.as_object_mut() {
                        for (k, v) in strings {
                            d.insert(k, json!(base64(v.as_str().unwrap_or_default().as_bytes())));
                        }
                    }
                }
            }
        }
        ("", "Namespace") => {
            let name = obj
                .pointer("/metadata/name")
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(meta) = obj_mut(obj, "metadata") {
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), name);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hello world"), "aGVsbG8gd29ybGQ=");
    }

    #[test]
    fn base64_decodes_what_it_encodes() {
        for text in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"hello world",
            &[0, 255, 128, 7],
        ] {
            assert_eq!(base64_decode(&base64(text)).as_deref(), Some(text));
        }
        assert_eq!(
            base64_decode("Zm8").as_deref(),
            Some(&b"fo"[..]),
            "unpadded"
        );
        assert_eq!(base64_decode("Zm8*"), None);
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("registry:5000/px/pem:1.2"), "IfNotPresent");
        assert_eq!(pull_policy("registry:5000/px/pem"), "Always");
    }
}
