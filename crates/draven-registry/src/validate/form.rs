//! The Camunda form validator: form-js JSON (as Camunda Modeler and form-js export it) checked
//! against an embedded JSON Schema (`form.schema.json`, beside this file) plus the rules a
//! schema cannot express, and extraction of the form id the payload provides.
//!
//! It never panics and its work is bounded: `serde_json` refuses nesting deeper than 128
//! (below [`super::MAX_DEPTH`]); components are checked one at a time against the schema's
//! `$defs/component` (the schema library collects every error of an array eagerly, which on a
//! form with millions of components would cost seconds and gigabytes); and at most
//! [`MAX_FINDINGS_PER_RULE`] findings of each rule, with messages of bounded length, are
//! reported.
//!
//! | code | severity | meaning |
//! |---|---|---|
//! | `form-malformed-json` | error | not JSON (line/column from the parser) |
//! | `form-too-deep` | error | nested deeper than the JSON parser's limit of 128 |
//! | `form-schema` | error | violates the form schema (pointer to the offending value) |
//! | `form-missing-type` | warning | no top-level `"type": "default"` (form-js writes it; older exports lack it) |
//! | `form-duplicate-component-id` | error | two components share an `id` (form-js uses them as element ids) |
//!
//! Extraction: `provides` holds `(Form, id)`; `requires` is empty.

use std::collections::{HashSet, VecDeque};
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

use super::{Finding, RefKind, Report, Severity};

/// Most findings of one rule reported for one payload; the rest add nothing a user can act on.
pub const MAX_FINDINGS_PER_RULE: usize = 100;
/// Longest message kept from the schema library, which quotes the offending value whole.
const MAX_MESSAGE_CHARS: usize = 300;

const SCHEMA: &str = include_str!("form.schema.json");

/// The compiled schemas: the form itself, and one component.
struct Schemas {
    form: Validator,
    component: Validator,
}

/// The schema is a constant of this crate, so failing to compile it is a bug that every form
/// case of the test suite catches, never an input-dependent failure; hence `expect`.
fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).expect("form.schema.json is valid JSON");
        let compile = |s: &Value| {
            jsonschema::validator_for(s).expect("form.schema.json is a valid JSON Schema")
        };
        let component = schema
            .pointer("/$defs/component")
            .expect("form.schema.json defines $defs/component");
        Schemas {
            form: compile(&schema),
            component: compile(component),
        }
    })
}

/// Validates one form JSON payload.
pub fn validate(bytes: &[u8]) -> Report {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => {
            let finding = json_error(&e, "form-malformed-json", "form-too-deep");
            return Report {
                findings: vec![finding],
                ..Report::default()
            };
        }
    };
    let mut check = Checker::default();
    check.schema(&schemas().form, &value, "");
    if value.is_object() && value.get("type").is_none() {
        let message = "form has no `\"type\": \"default\"`".to_string();
        check.findings.push(at_pointer(
            "form-missing-type",
            Severity::Warning,
            message,
            "",
        ));
    }
    check.components(&value);
    let provides = match value.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => vec![(RefKind::Form, id.to_string())],
        _ => Vec::new(),
    };
    Report {
        findings: check.findings,
        provides,
        requires: Vec::new(),
    }
}

/// Findings so far, with counts to enforce [`MAX_FINDINGS_PER_RULE`] cheaply.
#[derive(Default)]
struct Checker {
    findings: Vec<Finding>,
    schema_findings: usize,
    duplicate_findings: usize,
}

impl Checker {
    /// Adds `schema`'s findings for `instance` (found at `pointer`) while under the cap.
    fn schema(&mut self, schema: &Validator, instance: &Value, pointer: &str) {
        // `is_valid` stops at the first failure and allocates nothing: the common, cheap path.
        if self.schema_findings >= MAX_FINDINGS_PER_RULE || schema.is_valid(instance) {
            return;
        }
        for e in schema
            .iter_errors(instance)
            .take(MAX_FINDINGS_PER_RULE - self.schema_findings)
        {
            let at = format!("{pointer}{}", e.instance_path.as_str());
            self.findings.push(at_pointer(
                "form-schema",
                Severity::Error,
                truncate(&e.to_string()),
                &at,
            ));
            self.schema_findings += 1;
        }
    }

    /// Checks every component, at any depth (groups and dynamic lists nest `components`), in
    /// document order level by level, without recursion.
    fn components(&mut self, form: &Value) {
        let mut seen = HashSet::new();
        let mut pending = VecDeque::from([(form, String::new())]);
        while let Some((node, pointer)) = pending.pop_front() {
            let Some(children) = node.get("components").and_then(Value::as_array) else {
                continue;
            };
            for (i, component) in children.iter().enumerate() {
                let here = format!("{pointer}/components/{i}");
                self.schema(&schemas().component, component, &here);
                if let Some(id) = component.get("id").and_then(Value::as_str) {
                    if !seen.insert(id) {
                        self.duplicate_id(id, &here);
                    }
                }
                pending.push_back((component, here));
            }
        }
    }

    fn duplicate_id(&mut self, id: &str, pointer: &str) {
        if self.duplicate_findings >= MAX_FINDINGS_PER_RULE {
            return;
        }
        self.duplicate_findings += 1;
        let message = format!("component id `{id}` is used by another component");
        let finding = at_pointer(
            "form-duplicate-component-id",
            Severity::Error,
            message,
            &format!("{pointer}/id"),
        );
        self.findings.push(Finding {
            element: Some(id.to_string()),
            ..finding
        });
    }
}

/// A finding located by JSON pointer.
pub(super) fn at_pointer(
    rule: &'static str,
    severity: Severity,
    message: String,
    pointer: &str,
) -> Finding {
    Finding {
        rule,
        severity,
        message,
        line: None,
        column: None,
        pointer: Some(pointer.to_string()),
        element: None,
    }
}

/// Maps a `serde_json` error to the `too_deep` rule (its recursion limit) or the `malformed`
/// one, with the parser's line and column. Shared with the request validator.
pub(super) fn json_error(
    error: &serde_json::Error,
    malformed: &'static str,
    too_deep: &'static str,
) -> Finding {
    // serde_json exposes no error code for its recursion limit; its message is stable.
    let (rule, message) = if error.to_string().starts_with("recursion limit exceeded") {
        (
            too_deep,
            "JSON is nested deeper than 128 levels".to_string(),
        )
    } else {
        (malformed, format!("not valid JSON: {error}"))
    };
    let position = |n: usize| u32::try_from(n).ok().filter(|&n| n > 0);
    Finding {
        rule,
        severity: Severity::Error,
        message,
        line: position(error.line()),
        column: position(error.column()),
        pointer: None,
        element: None,
    }
}

fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_string(),
    }
}
