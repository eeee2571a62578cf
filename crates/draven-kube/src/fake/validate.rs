//! The fake's admission checks, answered as 422 `Invalid` like the API server's validation:
//! the object must match its `k8s-openapi` type exactly (no unknown fields, no wrong types),
//! names, label keys and values and resource quantities must be well formed, a Job's pods must
//! not restart, a Deployment's selector must match its template.

use super::{Failure, Res};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use serde_json::Value;

/// Paths present in `sent` but lost by the typed round trip (`kept`): unknown fields.
pub fn unknown_fields(sent: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (sent, kept) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(w) => unknown_fields(v, w, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Deserializes `value` into `T` and checks that nothing was dropped on the way: the error
/// names the unknown fields or the type mismatch.
pub fn strict<T>(value: &Value) -> Result<T, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    unknown_fields(value, &back, "", &mut unknown);
    if unknown.is_empty() {
        Ok(typed)
    } else {
        Err(format!("unknown field(s): {}", unknown.join(", ")))
    }
}

pub fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

pub fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn label_value_ok(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

pub fn label_key_ok(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(dns_subdomain) && !name.is_empty() && label_value_ok(name)
}

/// A resource quantity: a decimal number with an optional suffix.
pub fn quantity_ok(q: &str) -> bool {
    let suffixes = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    suffixes.iter().any(|s| {
        q.strip_suffix(s).is_some_and(|n| {
            !n.is_empty() && n.parse::<f64>().is_ok_and(|x| x >= 0.0) && !n.contains(['e', 'E'])
        })
    })
}

fn labels_ok(res: Res, name: &str, labels: &Value, path: &str) -> Result<(), Failure> {
    if let Some(m) = labels.as_object() {
        for (k, v) in m {
            let v = v.as_str().unwrap_or("");
            if !label_key_ok(k) {
                return Err(Failure::invalid(
                    res,
                    name,
                    format!("{path}: Invalid value: {k:?}: a label key must be a qualified name"),
                ));
            }
            if !label_value_ok(v) {
                return Err(Failure::invalid(res, name, format!("{path}: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
        }
    }
    Ok(())
}

fn pod_spec_ok(res: Res, name: &str, spec: &Value, path: &str) -> Result<(), Failure> {
    let containers = spec["containers"].as_array().filter(|c| !c.is_empty());
    let Some(containers) = containers else {
        return Err(Failure::invalid(
            res,
            name,
            format!("{path}.containers: Required value"),
        ));
    };
    for (i, c) in containers.iter().enumerate() {
        let cname = c["name"].as_str().unwrap_or("");
        if !dns_label(cname) {
            return Err(Failure::invalid(
                res,
                name,
                format!("{path}.containers[{i}].name: Invalid value: {cname:?}"),
            ));
        }
        if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
            return Err(Failure::invalid(
                res,
                name,
                format!("{path}.containers[{i}].image: Required value"),
            ));
        }
        for kind in ["requests", "limits"] {
            if let Some(m) = c["resources"][kind].as_object() {
                for (k, q) in m {
                    let q = q.as_str().unwrap_or("");
                    if !quantity_ok(q) {
                        return Err(Failure::invalid(res, name, format!("{path}.containers[{i}].resources.{kind}[{k}]: Invalid value: {q:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")));
                    }
                }
            }
        }
        if let Some(p) = c["imagePullPolicy"].as_str() {
            if !["Always", "IfNotPresent", "Never"].contains(&p) {
                return Err(Failure::invalid(
                    res,
                    name,
                    format!("{path}.containers[{i}].imagePullPolicy: Unsupported value: {p:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// Validates an object sent to the collection of `res` in `namespace`.
pub fn object(res: Res, namespace: &str, obj: &mut Value) -> Result<(), Failure> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let typed = match res {
        Res::Jobs => strict::<Job>(obj).map(|_| ()),
        Res::Pods => strict::<Pod>(obj).map(|_| ()),
        Res::Deployments => strict::<Deployment>(obj).map(|_| ()),
        Res::Services => strict::<Service>(obj).map(|_| ()),
        Res::Secrets => strict::<Secret>(obj).map(|_| ()),
    };
    typed.map_err(|e| Failure {
        code: 422,
        reason: "Invalid",
        message: format!("{} \"{name}\" is invalid: {e}", res.kind()),
    })?;
    if let Some(ns) = obj["metadata"]["namespace"].as_str() {
        if ns != namespace {
            return Err(Failure {
                code: 400,
                reason: "BadRequest",
                message: "the namespace of the provided object does not match the namespace sent on the request".into(),
            });
        }
    }
    let name_ok = match res {
        Res::Services => dns_label(&name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
        _ => dns_subdomain(&name),
    };
    if !name_ok {
        return Err(Failure::invalid(
            res,
            &name,
            format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 name"),
        ));
    }
    labels_ok(res, &name, &obj["metadata"]["labels"], "metadata.labels")?;
    match res {
        Res::Jobs => {
            let tpl = &obj["spec"]["template"];
            labels_ok(
                res,
                &name,
                &tpl["metadata"]["labels"],
                "spec.template.metadata.labels",
            )?;
            pod_spec_ok(res, &name, &tpl["spec"], "spec.template.spec")?;
            let restart = tpl["spec"]["restartPolicy"].as_str().unwrap_or("Always");
            if restart != "Never" && restart != "OnFailure" {
                return Err(Failure::invalid(res, &name, format!("spec.template.spec.restartPolicy: Unsupported value: {restart:?}: supported values: \"OnFailure\", \"Never\"")));
            }
            // The API server sets the job-name labels on the pod template.
            if name.len() > 63 {
                return Err(Failure::invalid(res, &name, "metadata.name: must be no more than 63 characters (it becomes the job-name label)"));
            }
        }
        Res::Pods => pod_spec_ok(res, &name, &obj["spec"], "spec")?,
        Res::Deployments => {
            let tpl = &obj["spec"]["template"];
            labels_ok(
                res,
                &name,
                &tpl["metadata"]["labels"],
                "spec.template.metadata.labels",
            )?;
            pod_spec_ok(res, &name, &tpl["spec"], "spec.template.spec")?;
            let selector = obj["spec"]["selector"]["matchLabels"].as_object();
            let tpl_labels = &tpl["metadata"]["labels"];
            let matches = selector
                .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &tpl_labels[k] == v));
            if !matches {
                return Err(Failure::invalid(res, &name, "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`"));
            }
        }
        Res::Services => {
            let ports = obj["spec"]["ports"].as_array().filter(|p| !p.is_empty());
            if ports.is_none() {
                return Err(Failure::invalid(res, &name, "spec.ports: Required value"));
            }
        }
        Res::Secrets => {
            use base64::Engine as _;
            // stringData is merged into data on write, as the API server does.
            if let Some(sd) = obj.get("stringData").and_then(|v| v.as_object()).cloned() {
                let data = obj["data"].as_object().cloned().unwrap_or_default();
                let mut data = data;
                for (k, v) in sd {
                    let enc =
                        base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""));
                    data.insert(k, enc.into());
                }
                obj["data"] = Value::Object(data);
                obj.as_object_mut().map(|o| o.remove("stringData"));
            }
        }
    }
    Ok(())
}
