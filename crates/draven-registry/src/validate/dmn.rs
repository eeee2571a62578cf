//! The DMN validator: namespace and identity rules, requirement references, and decision-table
//! structure for DMN 1.3–1.5 (1.1 and 1.2 accepted with a warning), plus extraction of the
//! decision ids a model provides.
//!
//! Only elements of the document's DMN MODEL namespace are interpreted; diagram interchange,
//! `extensionElements` and vendor namespaces are ignored. References into imported models
//! (`namespace#id`) cannot be checked here and are never errors. XML-level rules (`xml-*`) come
//! from [`super::xml`].
//!
//! | code | severity | meaning |
//! |---|---|---|
//! | `dmn-wrong-root` | error | the root is not `definitions` in a DMN MODEL namespace |
//! | `dmn-old-namespace` | warning | DMN 1.1 or 1.2 namespace; 1.3–1.5 are current |
//! | `dmn-duplicate-id` | error | an `id` is used twice among DMN MODEL and DMNDI elements |
//! | `dmn-no-decision` | warning | the model defines no decision, so it provides nothing |
//! | `dmn-unresolved-reference` | error | a requirement `href` (`#id`) is missing or names no element of the right kind here |
//! | `dmn-unresolved-import` | warning | an `href` points to a namespace that no `import` declares |
//! | `dmn-invalid-hit-policy` | error | `hitPolicy` is not one of UNIQUE, FIRST, PRIORITY, ANY, COLLECT, RULE ORDER, OUTPUT ORDER |
//! | `dmn-invalid-aggregation` | error | `aggregation` is not SUM, COUNT, MIN or MAX, or the hit policy is not COLLECT |
//! | `dmn-no-output` | error | a decision table has no `output` |
//! | `dmn-rule-arity` | error | a rule has not as many `inputEntry` as inputs, or `outputEntry` as outputs |
//!
//! Extraction: `provides` holds `(Decision, id)` for every `decision`; `requires` is empty,
//! because requirements inside one file are resolved here.

use std::collections::{HashMap, HashSet};

use roxmltree::Node;

use super::xml::{self, Positions};
use super::{Finding, RefKind, Report, Severity};

/// DMN MODEL namespaces accepted as current: 1.3, 1.4, 1.5.
pub const CURRENT_NAMESPACES: [&str; 3] = [
    "https://www.omg.org/spec/DMN/20191111/MODEL/",
    "https://www.omg.org/spec/DMN/20211108/MODEL/",
    "https://www.omg.org/spec/DMN/20230324/MODEL/",
];
/// DMN 1.1 and 1.2 MODEL namespaces: accepted with `dmn-old-namespace`.
pub const OLD_NAMESPACES: [&str; 2] = [
    "http://www.omg.org/spec/DMN/20151101/dmn.xsd",
    "http://www.omg.org/spec/DMN/20180521/MODEL/",
];
/// DMNDI namespaces (1.2–1.5), whose ids share the model's id space.
const DMNDI_NAMESPACES: [&str; 4] = [
    "http://www.omg.org/spec/DMN/20180521/DMNDI/",
    "https://www.omg.org/spec/DMN/20191111/DMNDI/",
    "https://www.omg.org/spec/DMN/20211108/DMNDI/",
    "https://www.omg.org/spec/DMN/20230324/DMNDI/",
];
const HIT_POLICIES: [&str; 7] = [
    "UNIQUE",
    "FIRST",
    "PRIORITY",
    "ANY",
    "COLLECT",
    "RULE ORDER",
    "OUTPUT ORDER",
];
const AGGREGATIONS: [&str; 4] = ["SUM", "COUNT", "MIN", "MAX"];

type N<'a> = Node<'a, 'a>;

/// Validates one DMN XML payload.
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
    let ns = match model_namespace(root) {
        Some(ns) => ns,
        None => {
            let message = format!(
                "root element is `{}` in namespace `{}`; expected `definitions` in a DMN 1.1–1.5 MODEL namespace",
                root.tag_name().name(),
                root.tag_name().namespace().unwrap_or("")
            );
            return only(positions.finding(root, "dmn-wrong-root", Severity::Error, message));
        }
    };
    let model = Model::index(root, ns);
    let mut check = Checker {
        model: &model,
        positions: &positions,
        findings: xml::Findings::default(),
    };
    check.run();
    let mut provides: Vec<(RefKind, String)> = model
        .decisions
        .iter()
        .map(|id| (RefKind::Decision, id.to_string()))
        .collect();
    provides.sort();
    provides.dedup();
    Report {
        findings: check.findings.into_vec(),
        provides,
        requires: Vec::new(),
    }
}

/// The DMN MODEL namespace of a `definitions` root, if it is one.
fn model_namespace<'a>(root: N<'a>) -> Option<&'a str> {
    let ns = root.tag_name().namespace()?;
    let known = CURRENT_NAMESPACES.contains(&ns) || OLD_NAMESPACES.contains(&ns);
    (known && root.tag_name().name() == "definitions").then_some(ns)
}

fn only(finding: Finding) -> Report {
    Report {
        findings: vec![finding],
        ..Report::default()
    }
}

/// What the rules look up, gathered in one pass.
struct Model<'a> {
    root: N<'a>,
    ns: &'a str,
    /// The model's own namespace (`definitions@namespace`): `that#id` hrefs are local.
    own_namespace: &'a str,
    imported: HashSet<&'a str>,
    ids: HashMap<&'a str, N<'a>>,
    duplicates: Vec<N<'a>>,
    decisions: Vec<&'a str>,
}

impl<'a> Model<'a> {
    fn index(root: N<'a>, ns: &'a str) -> Self {
        let mut m = Model {
            root,
            ns,
            own_namespace: root.attribute("namespace").unwrap_or(""),
            imported: HashSet::new(),
            ids: HashMap::new(),
            duplicates: Vec::new(),
            decisions: Vec::new(),
        };
        for node in root.descendants().filter(Node::is_element) {
            m.add(node);
        }
        m
    }

    fn add(&mut self, node: N<'a>) {
        let node_ns = node.tag_name().namespace().unwrap_or("");
        let in_model = node_ns == self.ns;
        if let Some(id) = node
            .attribute(xml::ID)
            .filter(|_| in_model || DMNDI_NAMESPACES.contains(&node_ns))
        {
            if self.ids.contains_key(id) {
                self.duplicates.push(node);
            } else {
                self.ids.insert(id, node);
            }
        }
        if !in_model {
            return;
        }
        match node.tag_name().name() {
            // An href names an imported model by namespace; some tools use the location or
            // the import's name instead, which is accepted too.
            "import" => self.imported.extend(
                ["namespace", "locationURI", "name"]
                    .iter()
                    .filter_map(|a| node.attribute(*a)),
            ),
            "decision" => self
                .decisions
                .extend(node.attribute(xml::ID).filter(|id| !id.is_empty())),
            _ => {}
        }
    }

    fn is(&self, node: N, local: &str) -> bool {
        xml::is(node, self.ns, local)
    }
}

struct Checker<'m, 'a> {
    model: &'m Model<'a>,
    positions: &'m Positions<'a>,
    findings: xml::Findings,
}

impl<'a> Checker<'_, 'a> {
    fn run(&mut self) {
        self.namespace_version();
        self.duplicate_ids();
        if self.model.decisions.is_empty() {
            let message = "the model defines no decision".to_string();
            self.report(
                self.model.root,
                "dmn-no-decision",
                Severity::Warning,
                message,
            );
        }
        let elements: Vec<N<'a>> = self
            .model
            .root
            .descendants()
            .filter(|n| n.tag_name().namespace() == Some(self.model.ns))
            .collect();
        for node in elements {
            match node.tag_name().name() {
                "requiredDecision" | "requiredInput" | "requiredKnowledge"
                | "requiredAuthority" => self.href(node),
                "decisionTable" => self.decision_table(node),
                _ => {}
            }
        }
    }

    fn report(&mut self, node: N, rule: &'static str, severity: Severity, message: String) {
        self.findings
            .add(self.positions, node, rule, severity, message);
    }

    fn namespace_version(&mut self) {
        if OLD_NAMESPACES.contains(&self.model.ns) {
            let message = format!(
                "namespace `{}` is DMN 1.1/1.2; DMN 1.3 or later is expected",
                self.model.ns
            );
            self.report(
                self.model.root,
                "dmn-old-namespace",
                Severity::Warning,
                message,
            );
        }
    }

    fn duplicate_ids(&mut self) {
        for node in self.model.duplicates.clone() {
            let id = node.attribute(xml::ID).unwrap_or("");
            let message = format!(
                "id `{id}` of this `{}` is already used by another element",
                node.tag_name().name()
            );
            self.report(node, "dmn-duplicate-id", Severity::Error, message);
        }
    }

    /// Checks a requirement's `href`: `#id` (or `own-namespace#id`) resolves here, to an
    /// element of the kind the requirement demands; `other-namespace#id` must be imported.
    fn href(&mut self, node: N<'a>) {
        let element = node.tag_name().name();
        let Some(href) = node.attribute("href") else {
            let message = format!("`{element}` has no `href`");
            return self.report(node, "dmn-unresolved-reference", Severity::Error, message);
        };
        let (namespace, id) = href.rsplit_once('#').unwrap_or(("", href));
        if !namespace.is_empty() && namespace != self.model.own_namespace {
            if !self.model.imported.contains(namespace) {
                let message = format!("`{element}` href `{href}` points to namespace `{namespace}`, which no import declares");
                self.report(node, "dmn-unresolved-import", Severity::Warning, message);
            }
            return;
        }
        let expected = expected_targets(element);
        let found = self
            .model
            .ids
            .get(id)
            .is_some_and(|target| expected.iter().any(|kind| self.model.is(*target, kind)));
        if !found {
            let message = format!(
                "`{element}` href `{href}` names no {} in this file",
                expected.join(" or ")
            );
            self.report(node, "dmn-unresolved-reference", Severity::Error, message);
        }
    }

    fn decision_table(&mut self, table: N<'a>) {
        let hit_policy = table.attribute("hitPolicy").unwrap_or("UNIQUE");
        if !HIT_POLICIES.contains(&hit_policy) {
            let message = format!(
                "hit policy `{hit_policy}` is not one of {}",
                HIT_POLICIES.join(", ")
            );
            self.report(table, "dmn-invalid-hit-policy", Severity::Error, message);
        }
        if let Some(aggregation) = table.attribute("aggregation") {
            self.aggregation(table, hit_policy, aggregation);
        }
        let count = |kind: &str| table.children().filter(|c| self.model.is(*c, kind)).count();
        let (inputs, outputs) = (count("input"), count("output"));
        if outputs == 0 {
            self.report(
                table,
                "dmn-no-output",
                Severity::Error,
                "decision table has no output".to_string(),
            );
        }
        let rules: Vec<N<'a>> = table
            .children()
            .filter(|c| self.model.is(*c, "rule"))
            .collect();
        for rule in rules {
            self.rule_arity(rule, inputs, outputs);
        }
    }

    fn aggregation(&mut self, table: N<'a>, hit_policy: &str, aggregation: &str) {
        let message = if hit_policy != "COLLECT" {
            format!("aggregation `{aggregation}` is only allowed with hit policy COLLECT, not `{hit_policy}`")
        } else if !AGGREGATIONS.contains(&aggregation) {
            format!(
                "aggregation `{aggregation}` is not one of {}",
                AGGREGATIONS.join(", ")
            )
        } else {
            return;
        };
        self.report(table, "dmn-invalid-aggregation", Severity::Error, message);
    }

    fn rule_arity(&mut self, rule: N<'a>, inputs: usize, outputs: usize) {
        let count = |kind: &str| rule.children().filter(|c| self.model.is(*c, kind)).count();
        let (input_entries, output_entries) = (count("inputEntry"), count("outputEntry"));
        if input_entries != inputs || output_entries != outputs {
            let message = format!(
                "rule has {input_entries} input and {output_entries} output entries; the table has {inputs} inputs and {outputs} outputs"
            );
            self.report(rule, "dmn-rule-arity", Severity::Error, message);
        }
    }
}

/// The element kinds a requirement may point to (DMN 1.3 §6.3).
fn expected_targets(requirement: &str) -> &'static [&'static str] {
    match requirement {
        "requiredDecision" => &["decision"],
        "requiredInput" => &["inputData"],
        "requiredKnowledge" => &["businessKnowledgeModel", "decisionService"],
        _ => &["knowledgeSource"],
    }
}
