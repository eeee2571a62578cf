//! The BPMN 2.0 validator: structural and reference rules over a `definitions` document, engine
//! rules for Camunda 7 and Camunda 8 (Zeebe) executable processes, and extraction of the
//! process ids a model provides and the decisions, processes and forms it requires.
//!
//! Real-world files carry diagram interchange, `extensionElements` and foreign namespaces from
//! many tools; those are ignored, never flagged. Only the BPMN MODEL and BPMNDI namespaces are
//! interpreted. A reference that may legitimately point outside the file (a QName whose prefix
//! names another namespace) is never an error. XML-level rules (`xml-*`) come from
//! [`super::xml`].
//!
//! | code | severity | meaning |
//! |---|---|---|
//! | `bpmn-wrong-root` | error | the root is not `definitions` in the BPMN 2.0 MODEL namespace |
//! | `bpmn-no-process` | error | no `process` contains any flow node |
//! | `bpmn-duplicate-id` | error | an `id` is used twice among BPMN MODEL and BPMNDI elements |
//! | `bpmn-missing-attribute` | error | a required reference is absent: `sourceRef`/`targetRef` of a sequence or message flow, `attachedToRef` |
//! | `bpmn-unresolved-reference` | error | a reference names no element of the right kind in this file |
//! | `bpmn-unresolved-external-reference` | warning | a QName reference points to a namespace that is neither this file's nor imported |
//! | `bpmn-unresolved-di-reference` | warning | a BPMNDI shape, edge or plane names no model element |
//! | `bpmn-invalid-default-flow` | error | `@default` is not an outgoing sequence flow of its element |
//! | `bpmn-missing-start-event` | error in a process, warning in a sub-process | flow nodes but no start event |
//! | `bpmn-missing-end-event` | error in a process, warning in a sub-process | flow nodes but no end event |
//! | `bpmn-disconnected-flow-node` | warning | a flow node with no sequence flow in or out, among others |
//! | `bpmn-gateway-without-outgoing` | error | a gateway has no outgoing sequence flow |
//! | `bpmn-missing-condition` | error if executable on Camunda 8, else warning | a branch of an exclusive/inclusive split has no condition and is not the default |
//! | `bpmn-invalid-event-gateway-target` | error if executable, else warning | an event-based gateway leads to something other than a catch event or receive task |
//! | `bpmn-missing-decision` | error if executable, else warning | a business-rule task names no decision and has no other implementation |
//! | `bpmn-missing-called-element` | error if executable, else warning | a call activity names no process |
//! | `bpmn-multiple-forms` | error if executable, else warning | a user task links more than one form |
//!
//! "Executable" means the enclosing `process` has `isExecutable="true"`. A missing condition is
//! an error only for Camunda 8 (Zeebe refuses to deploy it); Camunda 7 takes a flow without a
//! condition as always true, so there, and for unknown engines, it is a warning. The engine is
//! the root's `modeler:executionPlatform`, else Camunda 8 if any `zeebe:` element is present,
//! else Camunda 7 if any `camunda:` attribute is, else unknown.
//!
//! Extraction: `provides` holds every `process@id`. `requires` holds the decision of each
//! business-rule task (`zeebe:calledDecision@decisionId`, `camunda:decisionRef`), the process of
//! each call activity (`@calledElement`, `zeebe:calledElement@processId`) unless defined in this
//! file, and the form of each user task named by id (`zeebe:formDefinition@formId`,
//! `camunda:formRef`). Form *keys* (`camunda:formKey`, `zeebe:formDefinition@formKey`) are not
//! requirements: `camunda-forms:bpmn:…` keys name a form embedded in this file, and other keys
//! are Camunda 7 external/embedded form URLs (`app:…`, `embedded:…`) served by an application,
//! not registry artifacts. FEEL/JUEL expressions (`=…`, `${…}`, `#{…}`) are resolved at run
//! time, so they are neither requirements nor findings. `from` is the referencing element's id
//! (empty if it has none).

use std::collections::{HashMap, HashSet};

use roxmltree::Node;

use super::xml::{self, Positions};
use super::{Finding, RefKind, Report, Requirement, Severity};

pub const MODEL_NS: &str = "http://www.omg.org/spec/BPMN/20100524/MODEL";
pub const DI_NS: &str = "http://www.omg.org/spec/BPMN/20100524/DI";
pub const ZEEBE_NS: &str = "http://camunda.org/schema/zeebe/1.0";
pub const CAMUNDA_NS: &str = "http://camunda.org/schema/1.0/bpmn";
/// Camunda Modeler's namespace; its `executionPlatform` names the target engine.
pub const MODELER_NS: &str = "http://camunda.org/schema/modeler/1.0";

type N<'a> = Node<'a, 'a>;

const EVENTS: &[&str] = &[
    "startEvent",
    "endEvent",
    "intermediateCatchEvent",
    "intermediateThrowEvent",
    "boundaryEvent",
    "implicitThrowEvent",
];
const ACTIVITIES: &[&str] = &[
    "task",
    "userTask",
    "serviceTask",
    "sendTask",
    "receiveTask",
    "manualTask",
    "scriptTask",
    "businessRuleTask",
    "callActivity",
    "subProcess",
    "adHocSubProcess",
    "transaction",
];
const GATEWAYS: &[&str] = &[
    "exclusiveGateway",
    "inclusiveGateway",
    "parallelGateway",
    "eventBasedGateway",
    "complexGateway",
];
/// Flow nodes of choreographies: never checked, but sequence flows may connect them.
const CHOREOGRAPHY: &[&str] = &["choreographyTask", "subChoreography", "callChoreography"];
/// Elements that contain flow nodes and sequence flows, and so get the start/end rules.
const CONTAINERS: &[&str] = &["process", "subProcess", "transaction", "adHocSubProcess"];

/// Validates one BPMN 2.0 XML payload.
pub fn validate(bytes: &[u8]) -> Report {
    let text = match xml::decode(bytes) {
        Ok(text) => text,
        Err(finding) => return only(finding),
    };
    let doc = match xml::parse(&text) {
        Ok(doc) => doc,
        Err(finding) => return only(finding),
    };
    let positions = Positions::new(doc.input_text());
    let root = doc.root_element();
    if !xml::is(root, MODEL_NS, "definitions") {
        let message = format!(
            "root element is `{}` in namespace `{}`; expected `definitions` in `{MODEL_NS}`",
            root.tag_name().name(),
            root.tag_name().namespace().unwrap_or("")
        );
        return only(positions.finding(root, "bpmn-wrong-root", Severity::Error, message));
    }
    let model = Model::index(root);
    let mut check = Checker {
        model: &model,
        positions: &positions,
        findings: xml::Findings::default(),
    };
    check.run();
    Report {
        findings: check.findings.into_vec(),
        provides: model.provides(),
        requires: model.requires(),
    }
}

fn only(finding: Finding) -> Report {
    Report {
        findings: vec![finding],
        ..Report::default()
    }
}

fn is_model(node: N, names: &[&str]) -> bool {
    node.is_element()
        && node.tag_name().namespace() == Some(MODEL_NS)
        && names.contains(&node.tag_name().name())
}

fn is_flow_node(node: N) -> bool {
    is_model(node, EVENTS)
        || is_model(node, ACTIVITIES)
        || is_model(node, GATEWAYS)
        || is_model(node, CHOREOGRAPHY)
}

fn name(node: N<'_>) -> &str {
    node.tag_name().name()
}

/// A FEEL (`= …`) or JUEL (`${…}`, `#{…}`) expression, evaluated by the engine at run time.
fn is_expression(value: &str) -> bool {
    value.trim_start().starts_with('=') || value.contains("${") || value.contains("#{")
}

/// The children of `node`'s `extensionElements` in namespace `ns` named `local`.
fn extensions<'a>(node: N<'a>, ns: &'a str, local: &'a str) -> impl Iterator<Item = N<'a>> + 'a {
    node.children()
        .filter(|c| xml::is(*c, MODEL_NS, "extensionElements"))
        .flat_map(move |e| e.children().filter(move |c| xml::is(*c, ns, local)))
}

/// The process engine a document is made for, which decides some severities.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Camunda7,
    Camunda8,
    Unknown,
}

/// Where a QName-valued reference leads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Resolution {
    /// Found here, or in a model this file imports (which cannot be checked from here).
    Found,
    /// Meant for this file (no prefix, or this file's namespace) but absent.
    Missing,
    /// Its prefix names a namespace that is neither this file's nor imported.
    Foreign,
}

/// Everything the rules look up, gathered in one pass over the document.
struct Model<'a> {
    root: N<'a>,
    engine: Engine,
    uses_zeebe: bool,
    uses_camunda: bool,
    target_namespace: &'a str,
    imported: HashSet<&'a str>,
    /// Ids of BPMN MODEL and BPMNDI elements: the document-unique ones the spec defines.
    ids: HashMap<&'a str, N<'a>>,
    /// Every id in any namespace, for references that may point at extension content.
    any_ids: HashSet<&'a str>,
    duplicates: Vec<N<'a>>,
    flow_nodes: HashMap<&'a str, N<'a>>,
    sequence_flows: HashMap<&'a str, N<'a>>,
    outgoing: HashMap<&'a str, Vec<N<'a>>>,
    incoming: HashMap<&'a str, usize>,
    processes: HashMap<&'a str, N<'a>>,
    /// Business-rule tasks, call activities and user tasks, in document order.
    linking_tasks: Vec<N<'a>>,
}

impl<'a> Model<'a> {
    fn index(root: N<'a>) -> Self {
        let mut m = Model {
            root,
            engine: Engine::Unknown,
            uses_zeebe: false,
            uses_camunda: false,
            target_namespace: root.attribute("targetNamespace").unwrap_or(""),
            imported: HashSet::new(),
            ids: HashMap::new(),
            any_ids: HashSet::new(),
            duplicates: Vec::new(),
            flow_nodes: HashMap::new(),
            sequence_flows: HashMap::new(),
            outgoing: HashMap::new(),
            incoming: HashMap::new(),
            processes: HashMap::new(),
            linking_tasks: Vec::new(),
        };
        for node in root.descendants().filter(Node::is_element) {
            m.add(node);
        }
        m.engine = m.target_engine();
        m
    }

    fn target_engine(&self) -> Engine {
        match self.root.attribute((MODELER_NS, "executionPlatform")) {
            Some("Camunda Cloud") => Engine::Camunda8,
            Some("Camunda Platform") => Engine::Camunda7,
            _ if self.uses_zeebe => Engine::Camunda8,
            _ if self.uses_camunda => Engine::Camunda7,
            _ => Engine::Unknown,
        }
    }

    fn add(&mut self, node: N<'a>) {
        let ns = node.tag_name().namespace();
        self.uses_zeebe |= ns == Some(ZEEBE_NS);
        self.uses_camunda |= node.attributes().any(|a| a.namespace() == Some(CAMUNDA_NS));
        if let Some(id) = node.attribute(xml::ID) {
            self.any_ids.insert(id);
            if ns == Some(MODEL_NS) || ns == Some(DI_NS) {
                if self.ids.contains_key(id) {
                    self.duplicates.push(node);
                } else {
                    self.ids.insert(id, node);
                }
            }
        }
        if ns != Some(MODEL_NS) {
            return;
        }
        let id = node.attribute(xml::ID).unwrap_or("");
        match name(node) {
            "import" => {
                self.imported.extend(node.attribute("namespace"));
            }
            "process" => {
                self.processes.entry(id).or_insert(node);
            }
            "sequenceFlow" => {
                self.sequence_flows.entry(id).or_insert(node);
                if let Some(source) = node.attribute("sourceRef") {
                    self.outgoing.entry(source).or_default().push(node);
                }
                if let Some(target) = node.attribute("targetRef") {
                    *self.incoming.entry(target).or_default() += 1;
                }
            }
            "businessRuleTask" | "callActivity" | "userTask" => {
                self.flow_nodes.entry(id).or_insert(node);
                self.linking_tasks.push(node);
            }
            _ if is_flow_node(node) => {
                self.flow_nodes.entry(id).or_insert(node);
            }
            _ => {}
        }
    }

    fn outgoing_of(&self, node: N<'a>) -> &[N<'a>] {
        node.attribute(xml::ID)
            .and_then(|id| self.outgoing.get(id))
            .map_or(&[], Vec::as_slice)
    }

    fn incoming_count(&self, node: N<'a>) -> usize {
        node.attribute(xml::ID)
            .and_then(|id| self.incoming.get(id))
            .copied()
            .unwrap_or(0)
    }

    /// Resolves a QName-valued reference made at `at`; `exists` decides what counts as found.
    /// Some tools prefix local references with the BPMN namespace itself; those are local.
    fn resolve(&self, at: N<'a>, value: &str, exists: impl Fn(&str) -> bool) -> Resolution {
        if exists(xml::local_part(value)) {
            return Resolution::Found;
        }
        match xml::qname_namespace(at, value) {
            Some(ns) if ns != self.target_namespace && ns != MODEL_NS => {
                if self.imported.contains(ns) {
                    Resolution::Found
                } else {
                    Resolution::Foreign
                }
            }
            _ => Resolution::Missing,
        }
    }

    fn provides(&self) -> Vec<(RefKind, String)> {
        let mut out: Vec<_> = self
            .processes
            .keys()
            .filter(|id| !id.is_empty())
            .map(|id| (RefKind::Process, id.to_string()))
            .collect();
        out.sort();
        out
    }

    fn requires(&self) -> Vec<Requirement> {
        let mut out = Vec::new();
        for node in &self.linking_tasks {
            let from = node.attribute(xml::ID).unwrap_or("");
            for (kind, id) in self.references(*node) {
                out.push(Requirement {
                    kind,
                    id: id.to_string(),
                    from: from.to_string(),
                });
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The artifacts one task refers to, as (kind, id); run-time expressions and calls to
    /// processes of this file are left out.
    fn references(&self, node: N<'a>) -> Vec<(RefKind, &'a str)> {
        let ids = match name(node) {
            "businessRuleTask" => decision_refs(node)
                .into_iter()
                .map(|id| (RefKind::Decision, id))
                .collect(),
            "callActivity" => called_processes(node)
                .into_iter()
                .map(|id| (RefKind::Process, called_id(node, id)))
                .collect(),
            "userTask" => form_ids(node)
                .into_iter()
                .map(|id| (RefKind::Form, id))
                .collect(),
            _ => Vec::new(),
        };
        ids.into_iter()
            .map(|(kind, id)| (kind, id.trim()))
            .filter(|(_, id)| !id.is_empty() && !is_expression(id))
            .filter(|(kind, id)| *kind != RefKind::Process || !self.processes.contains_key(id))
            .collect()
    }
}

/// A called process id: `calledElement` is a QName in BPMN, so a declared prefix is dropped.
fn called_id<'a>(node: N<'a>, id: &'a str) -> &'a str {
    if xml::qname_namespace(node, id).is_some() {
        xml::local_part(id)
    } else {
        id
    }
}

/// Decision ids a business-rule task names (Camunda 8, then Camunda 7).
fn decision_refs(node: N<'_>) -> Vec<&str> {
    let zeebe =
        extensions(node, ZEEBE_NS, "calledDecision").filter_map(|d| d.attribute("decisionId"));
    zeebe
        .chain(node.attribute((CAMUNDA_NS, "decisionRef")))
        .collect()
}

/// Whether a call activity calls something: a process, or (Camunda 7) a CMMN case.
fn names_callee(node: N<'_>) -> bool {
    called_processes(node)
        .iter()
        .any(|id| !id.trim().is_empty())
        || node.has_attribute((CAMUNDA_NS, "caseRef"))
}

/// Process ids a call activity names (BPMN / Camunda 7 `calledElement`, then Camunda 8).
fn called_processes(node: N<'_>) -> Vec<&str> {
    let zeebe =
        extensions(node, ZEEBE_NS, "calledElement").filter_map(|c| c.attribute("processId"));
    node.attribute("calledElement")
        .into_iter()
        .chain(zeebe)
        .collect()
}

/// Form ids (not keys) a user task names: registry artifacts it depends on.
fn form_ids(node: N<'_>) -> Vec<&str> {
    let zeebe = extensions(node, ZEEBE_NS, "formDefinition").filter_map(|f| f.attribute("formId"));
    zeebe
        .chain(node.attribute((CAMUNDA_NS, "formRef")))
        .collect()
}

/// Every form link of a user task, ids and keys alike.
fn form_links(node: N) -> usize {
    let zeebe: usize = extensions(node, ZEEBE_NS, "formDefinition")
        .map(|f| {
            ["formKey", "formId", "externalReference"]
                .iter()
                .filter(|a| f.has_attribute(**a))
                .count()
        })
        .sum();
    let camunda = ["formKey", "formRef"]
        .iter()
        .filter(|a| node.has_attribute((CAMUNDA_NS, **a)))
        .count();
    zeebe + camunda
}

/// Whether a business-rule task is implemented by something other than a decision.
fn has_other_implementation(node: N) -> bool {
    ["class", "expression", "delegateExpression", "type"]
        .iter()
        .any(|a| node.has_attribute((CAMUNDA_NS, *a)))
        || extensions(node, ZEEBE_NS, "taskDefinition")
            .next()
            .is_some()
        || extensions(node, CAMUNDA_NS, "connector").next().is_some()
}

struct Checker<'m, 'a> {
    model: &'m Model<'a>,
    positions: &'m Positions<'a>,
    findings: xml::Findings,
}

impl<'a> Checker<'_, 'a> {
    fn run(&mut self) {
        self.duplicate_ids();
        self.has_process();
        let elements: Vec<N<'a>> = self
            .model
            .root
            .descendants()
            .filter(Node::is_element)
            .collect();
        for node in elements {
            match node.tag_name().namespace() {
                Some(MODEL_NS) => self.model_element(node),
                Some(DI_NS) => self.di_element(node),
                _ => {}
            }
        }
    }

    fn report(&mut self, node: N, rule: &'static str, severity: Severity, message: String) {
        self.findings
            .add(self.positions, node, rule, severity, message);
    }

    /// Engine rules are errors only where an engine will run the process.
    fn engine_severity(node: N) -> Severity {
        let process = node.ancestors().find(|a| xml::is(*a, MODEL_NS, "process"));
        match process.and_then(|p| p.attribute("isExecutable")) {
            Some("true") => Severity::Error,
            _ => Severity::Warning,
        }
    }

    fn duplicate_ids(&mut self) {
        for node in self.model.duplicates.clone() {
            let id = node.attribute(xml::ID).unwrap_or("");
            let message = format!(
                "id `{id}` of this `{}` is already used by another element",
                name(node)
            );
            self.report(node, "bpmn-duplicate-id", Severity::Error, message);
        }
    }

    fn has_process(&mut self) {
        let any = self
            .model
            .processes
            .values()
            .any(|p| p.children().any(is_flow_node));
        if !any {
            let message = "the document defines no process with flow nodes".to_string();
            self.report(self.model.root, "bpmn-no-process", Severity::Error, message);
        }
    }

    fn model_element(&mut self, node: N<'a>) {
        match name(node) {
            "sequenceFlow" => self.sequence_flow(node),
            "boundaryEvent" => self.boundary_event(node),
            "participant" => self.participant(node),
            "messageFlow" => self.message_flow(node),
            "flowNodeRef" => self.lane_member(node),
            "dataInputAssociation" | "dataOutputAssociation" => self.data_association(node),
            "businessRuleTask" => self.business_rule_task(node),
            "callActivity" => self.call_activity(node),
            "userTask" => self.user_task(node),
            _ => {}
        }
        if node.has_attribute("default") {
            self.default_flow(node);
        }
        if is_model(node, GATEWAYS) {
            self.gateway(node);
        }
        if is_model(node, CONTAINERS) {
            self.container(node);
        }
    }

    fn di_element(&mut self, node: N<'a>) {
        if !matches!(name(node), "BPMNShape" | "BPMNEdge" | "BPMNPlane") {
            return;
        }
        let Some(target) = node.attribute("bpmnElement") else {
            return;
        };
        let model = self.model;
        if model.resolve(node, target, |id| model.any_ids.contains(id)) != Resolution::Found {
            let message = format!(
                "`{}` draws `{target}`, which is not an element of this model",
                name(node)
            );
            self.report(
                node,
                "bpmn-unresolved-di-reference",
                Severity::Warning,
                message,
            );
        }
    }

    /// Reports a required attribute that is absent; returns its value otherwise.
    fn required(&mut self, node: N<'a>, attribute: &str) -> Option<&'a str> {
        let value = node.attribute(attribute);
        if value.is_none() {
            let message = format!("`{}` has no `{attribute}`", name(node));
            self.report(node, "bpmn-missing-attribute", Severity::Error, message);
        }
        value
    }

    fn unresolved(&mut self, node: N<'a>, attribute: &str, value: &str, expected: &str) {
        let message = format!(
            "`{}` {attribute} `{value}` names no {expected} in this file",
            name(node)
        );
        self.report(node, "bpmn-unresolved-reference", Severity::Error, message);
    }

    fn sequence_flow(&mut self, node: N<'a>) {
        for attribute in ["sourceRef", "targetRef"] {
            if let Some(value) = self.required(node, attribute) {
                if !self.model.flow_nodes.contains_key(value) {
                    self.unresolved(node, attribute, value, "flow node");
                }
            }
        }
    }

    fn boundary_event(&mut self, node: N<'a>) {
        let Some(value) = self.required(node, "attachedToRef") else {
            return;
        };
        let model = self.model;
        let activity = |id: &str| {
            model
                .flow_nodes
                .get(id)
                .is_some_and(|n| is_model(*n, ACTIVITIES))
        };
        self.qname_reference(node, "attachedToRef", value, "activity", activity);
    }

    fn participant(&mut self, node: N<'a>) {
        // A participant without a process is a black-box pool, which is fine.
        let Some(value) = node.attribute("processRef") else {
            return;
        };
        let model = self.model;
        self.qname_reference(node, "processRef", value, "process", |id| {
            model.processes.contains_key(id)
        });
    }

    fn message_flow(&mut self, node: N<'a>) {
        let model = self.model;
        for attribute in ["sourceRef", "targetRef"] {
            if let Some(value) = self.required(node, attribute) {
                self.qname_reference(node, attribute, value, "element", |id| {
                    model.any_ids.contains(id)
                });
            }
        }
    }

    /// Resolves a QName reference; a miss is an error locally, a warning for foreign namespaces.
    fn qname_reference(
        &mut self,
        node: N<'a>,
        attribute: &str,
        value: &str,
        expected: &str,
        exists: impl Fn(&str) -> bool,
    ) {
        match self.model.resolve(node, value, exists) {
            Resolution::Found => {}
            Resolution::Missing => self.unresolved(node, attribute, value, expected),
            Resolution::Foreign => {
                let message = format!(
                    "`{}` {attribute} `{value}` points to a namespace that is neither this file's nor imported",
                    name(node)
                );
                self.report(
                    node,
                    "bpmn-unresolved-external-reference",
                    Severity::Warning,
                    message,
                );
            }
        }
    }

    fn lane_member(&mut self, node: N<'a>) {
        let value = xml::text_of(node);
        if !self.model.flow_nodes.contains_key(value) {
            self.unresolved(node, "flowNodeRef", value, "flow node");
        }
    }

    fn data_association(&mut self, node: N<'a>) {
        let refs = node
            .children()
            .filter(|c| xml::is(*c, MODEL_NS, "sourceRef") || xml::is(*c, MODEL_NS, "targetRef"));
        for reference in refs {
            let value = xml::text_of(reference);
            if !self.model.any_ids.contains(value) {
                self.unresolved(node, name(reference), value, "data element");
            }
        }
    }

    fn default_flow(&mut self, node: N<'a>) {
        let Some(value) = node.attribute("default") else {
            return;
        };
        let Some(flow) = self.model.sequence_flows.get(value).copied() else {
            return self.unresolved(node, "default", value, "sequence flow");
        };
        if flow.attribute("sourceRef") != node.attribute(xml::ID) {
            let message = format!(
                "default flow `{value}` of `{}` does not leave it",
                name(node)
            );
            self.report(node, "bpmn-invalid-default-flow", Severity::Error, message);
        }
    }
}

/// Flow rules: containers, gateways and the engine rules of tasks.
impl<'a> Checker<'_, 'a> {
    fn container(&mut self, node: N<'a>) {
        let members: Vec<N<'a>> = node.children().filter(|c| is_flow_node(*c)).collect();
        if members.is_empty() {
            return;
        }
        self.start_and_end(node, &members);
        // Activities of an ad-hoc sub-process are meant to run without sequence flows.
        if members.len() > 1 && name(node) != "adHocSubProcess" {
            for member in members {
                self.disconnected(member);
            }
        }
    }

    fn start_and_end(&mut self, node: N<'a>, members: &[N<'a>]) {
        let (severity, needs_end) = match name(node) {
            "process" => (Severity::Error, true),
            "adHocSubProcess" => return,
            // An event sub-process starts on its trigger and may end implicitly.
            _ if node.attribute("triggeredByEvent") == Some("true") => (Severity::Warning, false),
            // Sub-processes may start and end implicitly; worth a look, not a rejection.
            _ => (Severity::Warning, true),
        };
        let has = |event: &str| members.iter().any(|m| name(*m) == event);
        if !has("startEvent") {
            let message = format!("`{}` has flow nodes but no start event", name(node));
            self.report(node, "bpmn-missing-start-event", severity, message);
        }
        if needs_end && !has("endEvent") {
            let message = format!("`{}` has flow nodes but no end event", name(node));
            self.report(node, "bpmn-missing-end-event", severity, message);
        }
    }

    fn disconnected(&mut self, node: N<'a>) {
        let exempt = name(node) == "boundaryEvent"
            || node.attribute("triggeredByEvent") == Some("true")
            || node.attribute("isForCompensation") == Some("true");
        if exempt || self.model.incoming_count(node) > 0 || !self.model.outgoing_of(node).is_empty()
        {
            return;
        }
        let message = format!("`{}` has no incoming or outgoing sequence flow", name(node));
        self.report(
            node,
            "bpmn-disconnected-flow-node",
            Severity::Warning,
            message,
        );
    }

    fn gateway(&mut self, node: N<'a>) {
        let outgoing = self.model.outgoing_of(node);
        if outgoing.is_empty() {
            let message = format!("`{}` has no outgoing sequence flow", name(node));
            return self.report(
                node,
                "bpmn-gateway-without-outgoing",
                Severity::Error,
                message,
            );
        }
        match name(node) {
            "exclusiveGateway" | "inclusiveGateway" if outgoing.len() > 1 => {
                self.conditions(node, outgoing)
            }
            "eventBasedGateway" => self.event_gateway_targets(node, outgoing),
            _ => {}
        }
    }

    fn conditions(&mut self, gateway: N<'a>, outgoing: &[N<'a>]) {
        let default = gateway.attribute("default");
        let gateway_id = gateway.attribute(xml::ID).unwrap_or("");
        for flow in outgoing {
            let conditional = flow
                .children()
                .any(|c| xml::is(c, MODEL_NS, "conditionExpression"));
            if conditional || (default.is_some() && flow.attribute(xml::ID) == default) {
                continue;
            }
            let message = format!(
                "sequence flow leaving `{}` `{gateway_id}` has no condition and is not its default",
                name(gateway)
            );
            let severity = match self.model.engine {
                Engine::Camunda8 => Self::engine_severity(gateway),
                Engine::Camunda7 | Engine::Unknown => Severity::Warning,
            };
            self.report(*flow, "bpmn-missing-condition", severity, message);
        }
    }

    fn event_gateway_targets(&mut self, gateway: N<'a>, outgoing: &[N<'a>]) {
        let gateway_id = gateway.attribute(xml::ID).unwrap_or("");
        for flow in outgoing {
            let target = flow
                .attribute("targetRef")
                .and_then(|t| self.model.flow_nodes.get(t))
                .copied();
            // An unresolved target is reported by the sequence-flow rule.
            let Some(target) = target else { continue };
            if !matches!(name(target), "intermediateCatchEvent" | "receiveTask") {
                let message = format!(
                    "event-based gateway `{gateway_id}` leads to a `{}`; only intermediate catch events and receive tasks may follow it",
                    name(target)
                );
                self.report(
                    *flow,
                    "bpmn-invalid-event-gateway-target",
                    Self::engine_severity(gateway),
                    message,
                );
            }
        }
    }

    fn business_rule_task(&mut self, node: N<'a>) {
        let named = decision_refs(node).iter().any(|id| !id.trim().is_empty());
        if !named && !has_other_implementation(node) {
            let message = "business-rule task names no decision (`zeebe:calledDecision@decisionId` or `camunda:decisionRef`) and has no other implementation".to_string();
            self.report(
                node,
                "bpmn-missing-decision",
                Self::engine_severity(node),
                message,
            );
        }
    }

    fn call_activity(&mut self, node: N<'a>) {
        if !names_callee(node) {
            let message = "call activity names no process (`calledElement` or `zeebe:calledElement@processId`)".to_string();
            self.report(
                node,
                "bpmn-missing-called-element",
                Self::engine_severity(node),
                message,
            );
        }
    }

    fn user_task(&mut self, node: N<'a>) {
        let links = form_links(node);
        if links > 1 {
            let message = format!("user task links {links} forms; an engine can show only one");
            self.report(
                node,
                "bpmn-multiple-forms",
                Self::engine_severity(node),
                message,
            );
        }
    }
}
