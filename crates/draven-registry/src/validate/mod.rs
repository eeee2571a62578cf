//! Validators for artifact payloads: BPMN 2.0 and DMN 1.3–1.5 XML, Camunda form JSON, and
//! request JSON. Each returns findings (stable rule code, severity, message, position) and what
//! the payload provides (process / decision / form ids) and requires from other artifacts.
//!
//! Validators never panic and never do unbounded work: hostile input (DTDs, entity
//! declarations, deep nesting, huge payloads) becomes a finding.

pub mod bpmn;
pub mod dmn;
pub mod form;
pub mod request;
pub mod xml;

use std::fmt;

/// The largest payload any validator looks at; larger ones get a single `payload-too-large`
/// finding (the API refuses them earlier with 413).
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
/// The deepest element nesting accepted in XML and JSON payloads.
pub const MAX_DEPTH: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Bpmn,
    Dmn,
    Form,
    Request,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Bpmn, Kind::Dmn, Kind::Form, Kind::Request];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bpmn => "bpmn",
            Kind::Dmn => "dmn",
            Kind::Form => "form",
            Kind::Request => "request",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The content type payloads of this kind are stored and served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Bpmn | Kind::Dmn => "application/xml",
            Kind::Form | Kind::Request => "application/json",
        }
    }

    /// File extension inside bundles.
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Bpmn => "bpmn",
            Kind::Dmn => "dmn",
            Kind::Form => "form",
            Kind::Request => "json",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem found in a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Stable rule code, e.g. `bpmn-unresolved-reference`. Part of the public API.
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
    /// 1-based line and column in XML payloads.
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// JSON pointer in JSON payloads.
    pub pointer: Option<String>,
    /// The id of the element concerned, when it has one.
    pub element: Option<String>,
}

/// What kind of thing one artifact provides to, or requires from, another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    /// A BPMN process id (call activities, requests).
    Process,
    /// A DMN decision id (business-rule tasks).
    Decision,
    /// A form id (user tasks, requests).
    Form,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Process => "process",
            RefKind::Decision => "decision",
            RefKind::Form => "form",
        }
    }

    pub fn parse(s: &str) -> Option<RefKind> {
        [RefKind::Process, RefKind::Decision, RefKind::Form]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A reference from this payload to something another artifact must provide.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub kind: RefKind,
    /// The referenced id (decision id, process id, form id).
    pub id: String,
    /// The element that makes the reference (a task id, or a JSON pointer for requests).
    pub from: String,
}

/// The result of validating one payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Ids this payload defines: (kind, id), sorted, unique.
    pub provides: Vec<(RefKind, String)>,
    /// References to other artifacts, sorted, unique. References resolved inside the same
    /// payload (a call activity to a process in the same file) are not listed.
    pub requires: Vec<Requirement>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// Validates `bytes` as a payload of `kind`.
pub fn validate(kind: Kind, bytes: &[u8]) -> Report {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Report {
            findings: vec![Finding {
                rule: "payload-too-large",
                severity: Severity::Error,
                message: format!(
                    "payload is {} bytes; at most {MAX_PAYLOAD_BYTES} are accepted",
                    bytes.len()
                ),
                line: None,
                column: None,
                pointer: None,
                element: None,
            }],
            ..Report::default()
        };
    }
    let mut report = match kind {
        Kind::Bpmn => bpmn::validate(bytes),
        Kind::Dmn => dmn::validate(bytes),
        Kind::Form => form::validate(bytes),
        Kind::Request => request::validate(bytes),
    };
    report.provides.sort();
    report.provides.dedup();
    report.requires.sort();
    report.requires.dedup();
    report
}
