//! The request validator: a request is a JSON document that starts a process and/or shows a
//! form, and this module owns its shape and the process / form requirements it declares.
//!
//! The shape (members not listed are allowed and ignored, so clients can carry their own data):
//!
//! ```text
//! {
//!   "id":      string, non-empty                        (required)
//!   "name":    string                                   (optional)
//!   "process": string, non-empty | { "id": string, non-empty, … }   (optional)
//!   "form":    string, non-empty | { "id": string, non-empty, … }   (optional)
//! }
//! ```
//!
//! At least one of `process` and `form` must be present. Nesting is bounded by `serde_json`'s
//! recursion limit of 128 (below [`super::MAX_DEPTH`]).
//!
//! | code | severity | meaning |
//! |---|---|---|
//! | `request-malformed-json` | error | not JSON (line/column from the parser) |
//! | `request-too-deep` | error | nested deeper than the JSON parser's limit of 128 |
//! | `request-not-object` | error | the top-level value is not an object |
//! | `request-missing-id` | error | no `id` member |
//! | `request-invalid-field` | error | `id`, `name`, `process` or `form` has the wrong type or is empty |
//! | `request-no-reference` | error | neither `process` nor `form` is present |
//!
//! Extraction: `requires` holds `(Process, id)` from `/process` and `(Form, id)` from `/form`,
//! with `from` set to that JSON pointer; `provides` is empty.

use serde_json::{Map, Value};

use super::form::{at_pointer, json_error};
use super::{Finding, RefKind, Report, Requirement, Severity};

/// Validates one request JSON payload.
pub fn validate(bytes: &[u8]) -> Report {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => return only(json_error(&e, "request-malformed-json", "request-too-deep")),
    };
    let Some(request) = value.as_object() else {
        return only(error(
            "request-not-object",
            "a request must be a JSON object".to_string(),
            "",
        ));
    };
    let mut report = Report::default();
    check_id(request, &mut report.findings);
    if request.get("name").is_some_and(|name| !name.is_string()) {
        report.findings.push(error(
            "request-invalid-field",
            "`name` must be a string".to_string(),
            "/name",
        ));
    }
    references(request, &mut report);
    if !request.contains_key("process") && !request.contains_key("form") {
        let message = "a request must reference a process and/or a form".to_string();
        report
            .findings
            .push(error("request-no-reference", message, ""));
    }
    report
}

fn only(finding: Finding) -> Report {
    Report {
        findings: vec![finding],
        ..Report::default()
    }
}

fn error(rule: &'static str, message: String, pointer: &str) -> Finding {
    at_pointer(rule, Severity::Error, message, pointer)
}

/// Records the `process` and `form` members as requirements, or as findings when unusable.
fn references(request: &Map<String, Value>, report: &mut Report) {
    for (field, kind) in [("process", RefKind::Process), ("form", RefKind::Form)] {
        let Some(value) = request.get(field) else {
            continue;
        };
        match reference_id(value) {
            Some(id) => report.requires.push(Requirement {
                kind,
                id: id.to_string(),
                from: format!("/{field}"),
            }),
            None => report.findings.push(invalid_reference(field, value)),
        }
    }
}

fn check_id(request: &Map<String, Value>, findings: &mut Vec<Finding>) {
    match request.get("id") {
        None => findings.push(error(
            "request-missing-id",
            "a request must have an `id`".to_string(),
            "",
        )),
        Some(Value::String(id)) if !id.trim().is_empty() => {}
        Some(_) => findings.push(error(
            "request-invalid-field",
            "`id` must be a non-empty string".to_string(),
            "/id",
        )),
    }
}

/// The id a `process` or `form` member names: a non-empty string, or an object's `id`.
fn reference_id(value: &Value) -> Option<&str> {
    let id = match value {
        Value::String(id) => id,
        Value::Object(object) => object.get("id")?.as_str()?,
        _ => return None,
    };
    Some(id.trim()).filter(|id| !id.is_empty())
}

fn invalid_reference(field: &str, value: &Value) -> Finding {
    let message =
        format!("`{field}` must be a non-empty string or an object with a non-empty string `id`");
    // Point at the offending `id` when the object is there but its id is not usable.
    let pointer = if value.is_object() {
        format!("/{field}/id")
    } else {
        format!("/{field}")
    };
    error("request-invalid-field", message, &pointer)
}
