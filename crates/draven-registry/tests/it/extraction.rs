//! What payloads provide and require: the input of the dependency graph (R6).

use draven_registry::validate::{validate, Kind, RefKind, Report, Requirement};

use crate::cases::{around, definitions_with, dmn, executable, FLOW, FORM};
use crate::corpus::CORPUS;

fn req(kind: RefKind, id: &str, from: &str) -> Requirement {
    Requirement {
        kind,
        id: id.to_string(),
        from: from.to_string(),
    }
}

fn provides(items: &[(RefKind, &str)]) -> Vec<(RefKind, String)> {
    items.iter().map(|(k, id)| (*k, id.to_string())).collect()
}

fn corpus(path: &str, kind: Kind) -> Report {
    let bytes = std::fs::read(format!("{CORPUS}/{path}")).expect("corpus file");
    validate(kind, &bytes)
}

#[test]
fn camunda8_tasks_require_decisions_processes_and_forms_by_id() {
    let body = around(
        r#"<subProcess id="x"><startEvent id="ss"/><sequenceFlow id="s1" sourceRef="ss" targetRef="b"/>
<businessRuleTask id="b"><extensionElements><zeebe:calledDecision decisionId="approve" resultVariable="r"/></extensionElements></businessRuleTask>
<sequenceFlow id="s2" sourceRef="b" targetRef="c"/>
<callActivity id="c"><extensionElements><zeebe:calledElement processId="Child"/></extensionElements></callActivity>
<sequenceFlow id="s3" sourceRef="c" targetRef="l"/>
<callActivity id="l"><extensionElements><zeebe:calledElement processId="P"/></extensionElements></callActivity>
<sequenceFlow id="s4" sourceRef="l" targetRef="u"/>
<userTask id="u"><extensionElements><zeebe:formDefinition formId="leave-form"/></extensionElements></userTask>
<sequenceFlow id="s5" sourceRef="u" targetRef="k"/>
<userTask id="k"><extensionElements><zeebe:formDefinition formKey="camunda-forms:bpmn:embedded"/></extensionElements></userTask>
<sequenceFlow id="s6" sourceRef="k" targetRef="dyn"/>
<businessRuleTask id="dyn"><extensionElements><zeebe:calledDecision decisionId="=decisionFor(kind)"/></extensionElements></businessRuleTask>
<sequenceFlow id="s7" sourceRef="dyn" targetRef="se"/><endEvent id="se"/></subProcess>"#,
    );
    let report = validate(Kind::Bpmn, executable("Camunda Cloud", &body).as_bytes());
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.provides, provides(&[(RefKind::Process, "P")]));
    // The call to `P` is resolved in this file; the embedded form key and the FEEL expression
    // are not artifacts.
    let expected = vec![
        req(RefKind::Process, "Child", "c"),
        req(RefKind::Decision, "approve", "b"),
        req(RefKind::Form, "leave-form", "u"),
    ];
    assert_eq!(report.requires, expected);
}

#[test]
fn camunda7_tasks_require_decisions_processes_and_forms_by_ref() {
    let body = format!(
        r#"<process id="Main" isExecutable="true"><startEvent id="s"/><sequenceFlow id="f1" sourceRef="s" targetRef="b"/>
<businessRuleTask id="b" camunda:decisionRef="risk"/><sequenceFlow id="f2" sourceRef="b" targetRef="c"/>
<callActivity id="c" calledElement="tns:Billing"/><sequenceFlow id="f3" sourceRef="c" targetRef="j"/>
<callActivity id="j" calledElement="${{subprocessKey}}"/><sequenceFlow id="f4" sourceRef="j" targetRef="u"/>
<userTask id="u" camunda:formRef="approval" camunda:formRefBinding="latest"/><sequenceFlow id="f5" sourceRef="u" targetRef="v"/>
<userTask id="v" camunda:formKey="embedded:app:forms/review.html"/><sequenceFlow id="f6" sourceRef="v" targetRef="e"/>
<endEvent id="e"/></process><process id="Other">{other}</process>"#,
        other = FLOW
            .replace("\"s\"", "\"os\"")
            .replace("\"e\"", "\"oe\"")
            .replace("\"f1\"", "\"of\"")
    );
    let report = validate(
        Kind::Bpmn,
        definitions_with(r#" modeler:executionPlatform="Camunda Platform""#, &body).as_bytes(),
    );
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(
        report.provides,
        provides(&[(RefKind::Process, "Main"), (RefKind::Process, "Other")])
    );
    let expected = vec![
        req(RefKind::Process, "Billing", "c"),
        req(RefKind::Decision, "risk", "b"),
        req(RefKind::Form, "approval", "u"),
    ];
    assert_eq!(report.requires, expected);
}

#[test]
fn corpus_camunda8_models_link_across_files() {
    let onboarding = corpus("bpmn/reference/C.9.0.bpmn", Kind::Bpmn);
    assert_eq!(
        onboarding.provides,
        provides(&[(RefKind::Process, "customer_onboarding_en")])
    );
    let expected = vec![
        req(RefKind::Process, "ManualCheck", "Activity_ManualCheck"),
        req(
            RefKind::Decision,
            "risk_check",
            "BusinessRuleTask_CheckApplicationAutomatically",
        ),
    ];
    assert_eq!(onboarding.requires, expected);

    let manual = corpus("bpmn/reference/C.9.2.bpmn", Kind::Bpmn);
    assert_eq!(
        manual.provides,
        provides(&[(RefKind::Process, "ManualCheck")])
    );
    assert_eq!(
        manual.requires,
        vec![req(
            RefKind::Process,
            "requestDocument_en",
            "CallActivity_RequestDocument"
        )]
    );

    let document = corpus("bpmn/reference/C.9.1.bpmn", Kind::Bpmn);
    assert_eq!(
        document.provides,
        provides(&[(RefKind::Process, "requestDocument_en")])
    );
    assert!(document.requires.is_empty());
}

#[test]
fn dmn_provides_its_decisions_and_requires_nothing() {
    let report = validate(
        Kind::Dmn,
        dmn(
            r#"<decision id="a" name="A"/><decision id="b" name="B"/><inputData id="i" name="I"/>"#,
        )
        .as_bytes(),
    );
    assert_eq!(
        report.provides,
        provides(&[(RefKind::Decision, "a"), (RefKind::Decision, "b")])
    );
    assert!(report.requires.is_empty());

    let tck = corpus(
        "dmn/tck-level-2/0010-multi-output-U/0010-multi-output-U.dmn",
        Kind::Dmn,
    );
    assert_eq!(
        tck.provides,
        provides(&[(RefKind::Decision, "_3b2953a3-745f-4d2e-b55d-75c8c5ae653c")])
    );
    assert!(tck.requires.is_empty());
}

#[test]
fn form_provides_its_id() {
    let report = validate(Kind::Form, FORM.as_bytes());
    assert_eq!(report.provides, provides(&[(RefKind::Form, "Form_1")]));
    assert!(report.requires.is_empty());
    let invalid = validate(Kind::Form, br#"{"id": 7, "components": []}"#);
    assert!(invalid.provides.is_empty());
}

#[test]
fn request_requires_process_and_form_from_pointers() {
    let report = validate(
        Kind::Request,
        br#"{"id":"r","process":{"id":" onboarding "},"form":"intake"}"#,
    );
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert!(report.provides.is_empty());
    assert_eq!(
        report.requires,
        vec![
            req(RefKind::Process, "onboarding", "/process"),
            req(RefKind::Form, "intake", "/form")
        ]
    );
    let invalid = validate(Kind::Request, br#"{"id":"r","process":{"id":""}}"#);
    assert!(invalid.requires.is_empty());
}

#[test]
fn findings_carry_positions_pointers_and_element_ids() {
    let text = executable("Camunda Cloud", &around(r#"<businessRuleTask id="x"/>"#));
    let report = validate(Kind::Bpmn, text.as_bytes());
    let finding = report.findings.first().expect("one finding");
    assert_eq!(finding.element.as_deref(), Some("x"));
    let line = text
        .lines()
        .position(|l| l.contains(r#"<businessRuleTask id="x"/>"#))
        .expect("line")
        + 1;
    let column = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.find("<businessRuleTask"))
        .expect("column")
        + 1;
    assert_eq!(
        (finding.line, finding.column),
        (Some(line as u32), Some(column as u32))
    );
    assert!(finding.message.contains("decision"), "{}", finding.message);

    let malformed = validate(Kind::Dmn, b"<definitions>\n  <decision>\n</definitions>");
    let f = &malformed.findings[0];
    assert_eq!(
        (f.rule, f.line, f.column),
        ("xml-malformed", Some(3), Some(1))
    );

    let json = validate(Kind::Form, b"{\n  \"id\": \"f\",\n  oops\n}");
    let f = &json.findings[0];
    assert_eq!(
        (f.rule, f.line, f.column),
        ("form-malformed-json", Some(3), Some(3))
    );

    let schema = validate(
        Kind::Form,
        br#"{"id":"f","type":"default","components":[{"id":"a"},{"type":"text"}]}"#,
    );
    let f = &schema.findings[0];
    assert_eq!(
        (f.rule, f.pointer.as_deref()),
        ("form-schema", Some("/components/0"))
    );

    let request = validate(Kind::Request, br#"{"id":"r","form":{"id":3}}"#);
    assert_eq!(request.findings[0].pointer.as_deref(), Some("/form/id"));
}
