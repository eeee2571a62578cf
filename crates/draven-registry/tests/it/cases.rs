//! Hand-written cases, one table, one `check` function: every rule code of every validator has
//! at least one failing case here and the rules' exemptions have passing ones. Adding a case is
//! adding a row.

use std::collections::BTreeSet;

use draven_registry::validate::{validate, Kind, Report, Severity};

pub const MODEL_NS: &str = "http://www.omg.org/spec/BPMN/20100524/MODEL";
pub const DMN15_NS: &str = "https://www.omg.org/spec/DMN/20230324/MODEL/";

/// The outcome of `check`: the findings as `rule` (errors) or `rule (warning)`, sorted.
fn outcome(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = report
        .findings
        .iter()
        .map(|f| match f.severity {
            Severity::Error => f.rule.to_string(),
            Severity::Warning => format!("{} (warning)", f.rule),
        })
        .collect();
    out.sort();
    out
}

/// Validates `input` as `kind` and compares the findings' rule codes with `expected`
/// (`"code"` for an error, `"code (warning)"` for a warning; order does not matter).
pub fn check(kind: Kind, input: &[u8], expected: &[&str]) -> Result<(), String> {
    let report = validate(kind, input);
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    let got = outcome(&report);
    if got == want {
        return Ok(());
    }
    let details: Vec<String> = report
        .findings
        .iter()
        .take(20)
        .map(|f| format!("    {f:?}"))
        .collect();
    Err(format!(
        "expected {}\n  got {}\n{}",
        summary(&want),
        summary(&got),
        details.join("\n")
    ))
}

/// Rule codes with their counts, short enough to read when a case has hundreds of findings.
fn summary(codes: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for code in codes {
        match counts.last_mut() {
            Some((last, n)) if last == code => *n += 1,
            _ => counts.push((code.clone(), 1)),
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(code, n)| {
            if *n == 1 {
                code.clone()
            } else {
                format!("{code} ×{n}")
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// A BPMN document with the namespaces the cases use; `attrs` go on `definitions`.
pub fn definitions_with(attrs: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="{MODEL_NS}" xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI"
  xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" xmlns:modeler="http://camunda.org/schema/modeler/1.0"
  xmlns:tns="urn:test" id="Definitions_1" targetNamespace="urn:test"{attrs}>
{body}
</definitions>"#
    )
}

pub fn definitions(body: &str) -> String {
    definitions_with("", body)
}

/// A non-executable process `P` holding `body`.
pub fn process(body: &str) -> String {
    definitions(&format!(
        r#"<process id="P" isExecutable="false">{body}</process>"#
    ))
}

/// An executable process `P` holding `body`, for an engine named by `platform`
/// (`""` for none, else `Camunda Cloud` or `Camunda Platform`).
pub fn executable(platform: &str, body: &str) -> String {
    let attrs = if platform.is_empty() {
        String::new()
    } else {
        format!(r#" modeler:executionPlatform="{platform}""#)
    };
    definitions_with(
        &attrs,
        &format!(r#"<process id="P" isExecutable="true">{body}</process>"#),
    )
}

/// Start `s` → `body`'s node `x` → end `e`: a valid frame around one node under test.
pub fn around(node: &str) -> String {
    format!(
        r#"<startEvent id="s"/><sequenceFlow id="f1" sourceRef="s" targetRef="x"/>{node}
<sequenceFlow id="f2" sourceRef="x" targetRef="e"/><endEvent id="e"/>"#
    )
}

/// The smallest valid process body.
pub const FLOW: &str =
    r#"<startEvent id="s"/><sequenceFlow id="f1" sourceRef="s" targetRef="e"/><endEvent id="e"/>"#;

/// An exclusive split `g` into `a` and `b` (each then ends), with `f_a`/`f_b` holding the
/// branch flows' content and `gateway_attrs` on the gateway.
fn split(kind: &str, gateway_attrs: &str, f_a: &str, f_b: &str) -> String {
    format!(
        r#"<startEvent id="s"/><sequenceFlow id="f0" sourceRef="s" targetRef="g"/>
<{kind} id="g"{gateway_attrs}/>
<sequenceFlow id="fa" sourceRef="g" targetRef="e">{f_a}</sequenceFlow>
<sequenceFlow id="fb" sourceRef="g" targetRef="e">{f_b}</sequenceFlow>
<endEvent id="e"/>"#
    )
}

const COND: &str = r#"<conditionExpression xsi:type="tFormalExpression" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">=x &gt; 1</conditionExpression>"#;

/// A DMN 1.5 document.
pub fn dmn(body: &str) -> String {
    dmn_in(DMN15_NS, body)
}

fn dmn_in(ns: &str, body: &str) -> String {
    format!(
        r#"<definitions xmlns="{ns}" id="defs" name="d" namespace="urn:dmn">{body}</definitions>"#
    )
}

/// A decision `d` with a decision table; `attrs` on the table, `columns` and `rules` inside.
fn table(attrs: &str, columns: &str, rules: &str) -> String {
    dmn(&format!(
        r#"<decision id="d" name="D"><decisionTable id="t"{attrs}>{columns}{rules}</decisionTable></decision>"#
    ))
}

const COLUMNS: &str = r#"<input id="i1"><inputExpression><text>a</text></inputExpression></input><output id="o1" name="r"/>"#;
const RULE: &str = r#"<rule id="r1"><inputEntry><text>-</text></inputEntry><outputEntry><text>1</text></outputEntry></rule>"#;

/// Elements nested `depth` deep inside a foreign-namespace extension of a valid process.
fn nested(depth: usize) -> String {
    let open = "<x:n>".repeat(depth);
    let close = "</x:n>".repeat(depth);
    process(&format!(
        r#"<extensionElements><x:root xmlns:x="urn:x">{open}{close}</x:root></extensionElements>{FLOW}"#
    ))
}

fn attributes(count: usize) -> String {
    let attrs: String = (0..count).map(|i| format!(" a{i}=\"v\"")).collect();
    process(&format!(
        r#"<extensionElements xmlns:x="urn:x"><x:many{attrs}/></extensionElements>{FLOW}"#
    ))
}

/// A process whose task is named "Café", encoded in ISO-8859-1 (é is 0xE9, invalid UTF-8).
fn latin1_process() -> Vec<u8> {
    let text = process(&around(r#"<task id="x" name="Café"/>"#)).replace("UTF-8", "ISO-8859-1");
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("Latin-1 text"))
        .collect()
}

fn utf16le_process() -> Vec<u8> {
    let text = process(FLOW).replace("encoding=\"UTF-8\"", "encoding=\"UTF-16\"");
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    bytes
}

pub const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"><process id="P">&lol9;</process></definitions>"#;

struct Case {
    name: &'static str,
    kind: Kind,
    input: Vec<u8>,
    expect: Vec<&'static str>,
}

fn case(
    name: &'static str,
    kind: Kind,
    input: impl Into<Vec<u8>>,
    expect: &[&'static str],
) -> Case {
    Case {
        name,
        kind,
        input: input.into(),
        expect: expect.to_vec(),
    }
}

/// `count` duplicates of one task id in a valid process: `count` duplicate-id errors.
fn duplicate_tasks(count: usize) -> String {
    let tasks = r#"<task id="t"/>"#.repeat(count + 1);
    process(&around(&format!(
        r#"<adHocSubProcess id="x">{tasks}</adHocSubProcess>"#
    )))
}

fn xml_cases() -> Vec<Case> {
    use Kind::{Bpmn, Dmn};
    vec![
        case("valid minimal process", Bpmn, process(FLOW), &[]),
        case(
            "invalid UTF-8",
            Bpmn,
            b"<definitions>\xff\xfe</definitions>".to_vec(),
            &["xml-unsupported-encoding"],
        ),
        case(
            "declared ISO-8859-1 is decoded",
            Bpmn,
            latin1_process(),
            &[],
        ),
        case("UTF-16 with BOM is decoded", Bpmn, utf16le_process(), &[]),
        case(
            "UTF-8 BOM is skipped",
            Bpmn,
            [&b"\xEF\xBB\xBF"[..], process(FLOW).as_bytes()].concat(),
            &[],
        ),
        case(
            "billion laughs",
            Bpmn,
            BILLION_LAUGHS,
            &["xml-dtd-forbidden"],
        ),
        case(
            "billion laughs as DMN",
            Dmn,
            BILLION_LAUGHS,
            &["xml-dtd-forbidden"],
        ),
        case(
            "empty DOCTYPE",
            Bpmn,
            format!(
                "<!DOCTYPE definitions>{}",
                process(FLOW).replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "")
            ),
            &["xml-dtd-forbidden"],
        ),
        case(
            "external entity",
            Dmn,
            r#"<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>"#,
            &["xml-dtd-forbidden"],
        ),
        case(
            "DOCTYPE text inside a comment is fine",
            Bpmn,
            process(&format!("<!-- <!DOCTYPE x> -->{FLOW}")),
            &[],
        ),
        case(
            "DOCTYPE text inside CDATA is fine",
            Bpmn,
            process(&format!(
                "<documentation><![CDATA[<!DOCTYPE x>]]></documentation>{FLOW}"
            )),
            &[],
        ),
        // definitions > process > extensionElements > x:root > x:n…: four levels before `nested`.
        case("nesting at the limit", Bpmn, nested(256 - 4), &[]),
        case(
            "nesting over the limit",
            Bpmn,
            nested(256 - 3),
            &["xml-too-deep"],
        ),
        case("128 attributes", Bpmn, attributes(128), &[]),
        case(
            "129 attributes",
            Bpmn,
            attributes(129),
            &["xml-too-complex"],
        ),
        case(
            "too many nodes",
            Bpmn,
            definitions(&"<x/>".repeat(500_001)),
            &["xml-too-many-nodes"],
        ),
        case(
            "not well-formed",
            Bpmn,
            "<definitions><process></definitions>",
            &["xml-malformed"],
        ),
        case("not XML at all", Dmn, "hello", &["xml-malformed"]),
        Case {
            expect: vec!["bpmn-duplicate-id"; 1000],
            ..case("findings up to the limit", Bpmn, duplicate_tasks(1000), &[])
        },
        Case {
            expect: [
                vec!["bpmn-duplicate-id"; 1000],
                vec!["xml-too-many-findings"],
            ]
            .concat(),
            ..case("findings over the limit", Bpmn, duplicate_tasks(1001), &[])
        },
        case("empty payload", Bpmn, "", &["xml-malformed"]),
        case(
            "undeclared prefix",
            Bpmn,
            "<bpmn:definitions/>",
            &["xml-malformed"],
        ),
    ]
}

fn bpmn_structure_cases() -> Vec<Case> {
    use Kind::Bpmn;
    let prefixed = format!(
        r#"<b:definitions xmlns:b="{MODEL_NS}" id="d" targetNamespace="urn:t"><b:process id="P"><b:startEvent id="s"/>
<b:sequenceFlow id="f" sourceRef="s" targetRef="e"/><b:endEvent id="e"/></b:process></b:definitions>"#
    );
    vec![
        case("any prefix for the BPMN namespace", Bpmn, prefixed, &[]),
        case(
            "wrong namespace",
            Bpmn,
            r#"<definitions xmlns="urn:not-bpmn"/>"#,
            &["bpmn-wrong-root"],
        ),
        case(
            "wrong root element",
            Bpmn,
            format!(r#"<process xmlns="{MODEL_NS}" id="P"/>"#),
            &["bpmn-wrong-root"],
        ),
        case("DMN given as BPMN", Bpmn, dmn(""), &["bpmn-wrong-root"]),
        case(
            "no process",
            Bpmn,
            definitions(
                r#"<collaboration id="c"><participant id="p" name="black box"/></collaboration>"#,
            ),
            &["bpmn-no-process"],
        ),
        case(
            "only an empty process",
            Bpmn,
            definitions(r#"<process id="P"/>"#),
            &["bpmn-no-process"],
        ),
        case(
            "duplicate id",
            Bpmn,
            process(&format!(r#"<task id="s"/>{FLOW}"#)),
            &["bpmn-duplicate-id"],
        ),
        case(
            "duplicate id between model and DI",
            Bpmn,
            definitions(&format!(
                r#"<process id="P">{FLOW}</process><bpmndi:BPMNDiagram id="s"><bpmndi:BPMNPlane id="pl" bpmnElement="P"/></bpmndi:BPMNDiagram>"#
            )),
            &["bpmn-duplicate-id"],
        ),
        case(
            "extension ids are not BPMN ids",
            Bpmn,
            process(&format!(
                r#"<extensionElements><zeebe:userTaskForm id="s">{{}}</zeebe:userTaskForm></extensionElements>{FLOW}"#
            )),
            &[],
        ),
        case(
            "sequence flow without targetRef",
            Bpmn,
            process(
                r#"<startEvent id="s"/><sequenceFlow id="f1" sourceRef="s"/><endEvent id="e"/>"#,
            ),
            &[
                "bpmn-missing-attribute",
                "bpmn-disconnected-flow-node (warning)",
            ],
        ),
        case(
            "sequence flow to nowhere",
            Bpmn,
            process(
                r#"<startEvent id="s"/><sequenceFlow id="f1" sourceRef="s" targetRef="nope"/><sequenceFlow id="f2" sourceRef="s" targetRef="e"/><endEvent id="e"/>"#,
            ),
            &["bpmn-unresolved-reference"],
        ),
        case(
            "sequence flow to a non-flow-node",
            Bpmn,
            process(
                r#"<startEvent id="s"/><dataObject id="o"/><sequenceFlow id="f0" sourceRef="s" targetRef="o"/><sequenceFlow id="f1" sourceRef="s" targetRef="e"/><endEvent id="e"/>"#,
            ),
            &["bpmn-unresolved-reference"],
        ),
        case(
            "boundary event on nothing",
            Bpmn,
            process(&around(
                r#"<task id="x"/><boundaryEvent id="b" attachedToRef="nope"/>"#,
            )),
            &["bpmn-unresolved-reference"],
        ),
        case(
            "boundary event without attachedToRef",
            Bpmn,
            process(&around(r#"<task id="x"/><boundaryEvent id="b"/>"#)),
            &["bpmn-missing-attribute"],
        ),
        case(
            "boundary event on a task, QName",
            Bpmn,
            process(&around(
                r#"<task id="x"/><boundaryEvent id="b" attachedToRef="tns:x"/>"#,
            )),
            &[],
        ),
        case(
            "participant with unknown local process",
            Bpmn,
            definitions(&format!(
                r#"<collaboration id="c"><participant id="p" processRef="tns:Q"/></collaboration><process id="P">{FLOW}</process>"#
            )),
            &["bpmn-unresolved-reference"],
        ),
        case(
            "participant with local process QName",
            Bpmn,
            definitions(&format!(
                r#"<collaboration id="c"><participant id="p" processRef="tns:P"/></collaboration><process id="P">{FLOW}</process>"#
            )),
            &[],
        ),
        case(
            "participant with process of another, unimported namespace",
            Bpmn,
            definitions(&format!(
                r#"<collaboration id="c" xmlns:o="urn:other"><participant id="p" processRef="o:Q"/></collaboration><process id="P">{FLOW}</process>"#
            )),
            &["bpmn-unresolved-external-reference (warning)"],
        ),
        case(
            "participant with process of an imported namespace",
            Bpmn,
            definitions(&format!(
                r#"<import namespace="urn:other" location="o.bpmn" importType="{MODEL_NS}"/><collaboration id="c" xmlns:o="urn:other"><participant id="p" processRef="o:Q"/></collaboration><process id="P">{FLOW}</process>"#
            )),
            &[],
        ),
        case(
            "black-box participant",
            Bpmn,
            definitions(&format!(
                r#"<collaboration id="c"><participant id="p"/></collaboration><process id="P">{FLOW}</process>"#
            )),
            &[],
        ),
        case(
            "message flow to nowhere",
            Bpmn,
            definitions(&format!(
                r#"<collaboration id="c"><participant id="p" processRef="P"/><participant id="q"/><messageFlow id="m" sourceRef="q" targetRef="nope"/></collaboration><process id="P">{FLOW}</process>"#
            )),
            &["bpmn-unresolved-reference"],
        ),
        case(
            "message flow without sourceRef",
            Bpmn,
            definitions(&format!(
                r#"<collaboration id="c"><participant id="p" processRef="P"/><messageFlow id="m" targetRef="s"/></collaboration><process id="P">{FLOW}</process>"#
            )),
            &["bpmn-missing-attribute"],
        ),
        case(
            "message flow between pool and event",
            Bpmn,
            definitions(&format!(
                r#"<collaboration id="c"><participant id="p" processRef="P"/><participant id="q"/><messageFlow id="m" sourceRef="q" targetRef="s"/></collaboration><process id="P">{FLOW}</process>"#
            )),
            &[],
        ),
        case(
            "lane with unknown member",
            Bpmn,
            process(&format!(
                r#"<laneSet id="ls"><lane id="l"><flowNodeRef>s</flowNodeRef><flowNodeRef>nope</flowNodeRef></lane></laneSet>{FLOW}"#
            )),
            &["bpmn-unresolved-reference"],
        ),
        case(
            "lane with known members",
            Bpmn,
            process(&format!(
                r#"<laneSet id="ls"><lane id="l"><flowNodeRef> s </flowNodeRef><flowNodeRef>e</flowNodeRef></lane></laneSet>{FLOW}"#
            )),
            &[],
        ),
        case(
            "data association to nowhere",
            Bpmn,
            process(&around(
                r#"<dataObject id="o"/><task id="x"><dataInputAssociation id="a"><sourceRef>nope</sourceRef><targetRef>x</targetRef></dataInputAssociation></task>"#,
            )),
            &["bpmn-unresolved-reference"],
        ),
        case(
            "data associations resolved",
            Bpmn,
            process(&around(
                r#"<dataObject id="o"/><dataObjectReference id="r" dataObjectRef="o"/><task id="x"><property id="pr"/><dataInputAssociation id="a"><sourceRef>r</sourceRef><targetRef>pr</targetRef></dataInputAssociation><dataOutputAssociation id="b"><targetRef>r</targetRef></dataOutputAssociation></task>"#,
            )),
            &[],
        ),
        case(
            "DI shape of nothing",
            Bpmn,
            definitions(&format!(
                r#"<process id="P">{FLOW}</process><bpmndi:BPMNDiagram id="dg"><bpmndi:BPMNPlane id="pl" bpmnElement="P"><bpmndi:BPMNShape id="sh" bpmnElement="nope"><dc:Bounds x="0" y="0" width="1" height="1"/></bpmndi:BPMNShape></bpmndi:BPMNPlane></bpmndi:BPMNDiagram>"#
            )),
            &["bpmn-unresolved-di-reference (warning)"],
        ),
        case(
            "DI shapes and edges resolved",
            Bpmn,
            definitions(&format!(
                r#"<process id="P">{FLOW}</process><bpmndi:BPMNDiagram id="dg"><bpmndi:BPMNPlane id="pl" bpmnElement="P"><bpmndi:BPMNShape id="sh" bpmnElement="s"/><bpmndi:BPMNEdge id="ed" bpmnElement="f1"/></bpmndi:BPMNPlane></bpmndi:BPMNDiagram>"#
            )),
            &[],
        ),
        case(
            "default flow unknown",
            Bpmn,
            process(&split("exclusiveGateway", r#" default="nope""#, COND, COND)),
            &["bpmn-unresolved-reference"],
        ),
        case(
            "default flow not outgoing",
            Bpmn,
            process(&split("exclusiveGateway", r#" default="f0""#, COND, COND)),
            &["bpmn-invalid-default-flow"],
        ),
        case(
            "default flow of a task",
            Bpmn,
            process(&around(r#"<task id="x" default="f2"/>"#)),
            &[],
        ),
    ]
}

fn bpmn_flow_cases() -> Vec<Case> {
    use Kind::Bpmn;
    let no_start = r#"<task id="it"/><sequenceFlow id="if" sourceRef="it" targetRef="ie"/><endEvent id="ie"/>"#;
    let no_end = r#"<startEvent id="is"/><sequenceFlow id="if" sourceRef="is" targetRef="it"/><task id="it"/>"#;
    vec![
        case(
            "process without start event",
            Bpmn,
            process(no_start),
            &["bpmn-missing-start-event"],
        ),
        case(
            "process without end event",
            Bpmn,
            process(no_end),
            &["bpmn-missing-end-event"],
        ),
        case(
            "sub-process without start event",
            Bpmn,
            process(&around(&format!(
                r#"<subProcess id="x">{no_start}</subProcess>"#
            ))),
            &["bpmn-missing-start-event (warning)"],
        ),
        case(
            "sub-process without end event",
            Bpmn,
            process(&around(&format!(
                r#"<subProcess id="x">{no_end}</subProcess>"#
            ))),
            &["bpmn-missing-end-event (warning)"],
        ),
        case(
            "empty sub-process",
            Bpmn,
            process(&around(r#"<subProcess id="x"/>"#)),
            &[],
        ),
        case(
            "ad-hoc sub-process without events or flows",
            Bpmn,
            process(&around(
                r#"<adHocSubProcess id="x"><task id="a"/><task id="b"/></adHocSubProcess>"#,
            )),
            &[],
        ),
        case(
            "event sub-process without end event",
            Bpmn,
            process(&format!(
                r#"{FLOW}<subProcess id="es" triggeredByEvent="true"><startEvent id="es1"><messageEventDefinition id="md"/></startEvent><sequenceFlow id="ef" sourceRef="es1" targetRef="et"/><task id="et"/></subProcess>"#
            )),
            &[],
        ),
        case(
            "event sub-process without start event",
            Bpmn,
            process(&format!(
                r#"{FLOW}<subProcess id="es" triggeredByEvent="true"><task id="et"/></subProcess>"#
            )),
            &["bpmn-missing-start-event (warning)"],
        ),
        case(
            "disconnected task",
            Bpmn,
            process(&format!(r#"{FLOW}<task id="t"/>"#)),
            &["bpmn-disconnected-flow-node (warning)"],
        ),
        case(
            "single-node process is not disconnected",
            Bpmn,
            definitions(&format!(
                r#"<process id="Q"><task id="t"/></process><process id="P">{FLOW}</process>"#
            )),
            &["bpmn-missing-end-event", "bpmn-missing-start-event"],
        ),
        case(
            "boundary event and compensation handler are not disconnected",
            Bpmn,
            process(&around(
                r#"<task id="x"/><boundaryEvent id="b" attachedToRef="x"><compensateEventDefinition id="cd"/></boundaryEvent><task id="h" isForCompensation="true"/><association id="as" sourceRef="b" targetRef="h"/>"#,
            )),
            &[],
        ),
        case(
            "gateway without outgoing flow",
            Bpmn,
            process(
                r#"<startEvent id="s"/><sequenceFlow id="f1" sourceRef="s" targetRef="g"/><sequenceFlow id="f2" sourceRef="s" targetRef="e"/><parallelGateway id="g"/><endEvent id="e"/>"#,
            ),
            &["bpmn-gateway-without-outgoing"],
        ),
    ]
}

fn bpmn_engine_cases() -> Vec<Case> {
    use Kind::Bpmn;
    let bare = split("exclusiveGateway", "", COND, "");
    let with_default = split("exclusiveGateway", r#" default="fb""#, COND, "");
    let event_gateway = r#"<startEvent id="s"/><sequenceFlow id="f0" sourceRef="s" targetRef="g"/><eventBasedGateway id="g"/>
<sequenceFlow id="fa" sourceRef="g" targetRef="c"/><intermediateCatchEvent id="c"><timerEventDefinition id="td"/></intermediateCatchEvent>
<sequenceFlow id="fb" sourceRef="g" targetRef="t"/><TASK id="t"/>
<sequenceFlow id="fc" sourceRef="c" targetRef="e"/><sequenceFlow id="fd" sourceRef="t" targetRef="e"/><endEvent id="e"/>"#;
    vec![
        case(
            "missing condition, executable on Camunda 8",
            Bpmn,
            executable("Camunda Cloud", &bare),
            &["bpmn-missing-condition"],
        ),
        case(
            "missing condition, Zeebe elements imply Camunda 8",
            Bpmn,
            executable(
                "",
                &format!(r#"<extensionElements><zeebe:properties/></extensionElements>{bare}"#),
            ),
            &["bpmn-missing-condition"],
        ),
        case(
            "missing condition, executable on Camunda 7",
            Bpmn,
            executable("Camunda Platform", &bare),
            &["bpmn-missing-condition (warning)"],
        ),
        case(
            "missing condition, executable on an unknown engine",
            Bpmn,
            executable("", &bare),
            &["bpmn-missing-condition (warning)"],
        ),
        case(
            "missing condition, not executable",
            Bpmn,
            process(&bare),
            &["bpmn-missing-condition (warning)"],
        ),
        case(
            "missing condition on an inclusive split",
            Bpmn,
            executable("Camunda Cloud", &split("inclusiveGateway", "", "", COND)),
            &["bpmn-missing-condition"],
        ),
        case(
            "unconditioned branch is the default",
            Bpmn,
            executable("Camunda Cloud", &with_default),
            &[],
        ),
        case(
            "all branches conditioned",
            Bpmn,
            executable("Camunda Cloud", &split("exclusiveGateway", "", COND, COND)),
            &[],
        ),
        case(
            "parallel split needs no conditions",
            Bpmn,
            executable("Camunda Cloud", &split("parallelGateway", "", "", "")),
            &[],
        ),
        case(
            "event gateway to a task, executable",
            Bpmn,
            executable("", &event_gateway.replace("TASK", "task")),
            &["bpmn-invalid-event-gateway-target"],
        ),
        case(
            "event gateway to a task, not executable",
            Bpmn,
            process(&event_gateway.replace("TASK", "task")),
            &["bpmn-invalid-event-gateway-target (warning)"],
        ),
        case(
            "event gateway to a receive task",
            Bpmn,
            executable("", &event_gateway.replace("TASK", "receiveTask")),
            &[],
        ),
        case(
            "business rule task without decision, executable",
            Bpmn,
            executable("", &around(r#"<businessRuleTask id="x"/>"#)),
            &["bpmn-missing-decision"],
        ),
        case(
            "business rule task without decision, not executable",
            Bpmn,
            process(&around(r#"<businessRuleTask id="x"/>"#)),
            &["bpmn-missing-decision (warning)"],
        ),
        case(
            "business rule task, Camunda 8 decision",
            Bpmn,
            executable(
                "Camunda Cloud",
                &around(
                    r#"<businessRuleTask id="x"><extensionElements><zeebe:calledDecision decisionId="d" resultVariable="r"/></extensionElements></businessRuleTask>"#,
                ),
            ),
            &[],
        ),
        case(
            "business rule task, Camunda 8 empty decision id",
            Bpmn,
            executable(
                "Camunda Cloud",
                &around(
                    r#"<businessRuleTask id="x"><extensionElements><zeebe:calledDecision decisionId=" "/></extensionElements></businessRuleTask>"#,
                ),
            ),
            &["bpmn-missing-decision"],
        ),
        case(
            "business rule task, Camunda 8 job worker",
            Bpmn,
            executable(
                "Camunda Cloud",
                &around(
                    r#"<businessRuleTask id="x"><extensionElements><zeebe:taskDefinition type="rules"/></extensionElements></businessRuleTask>"#,
                ),
            ),
            &[],
        ),
        case(
            "business rule task, Camunda 7 decision",
            Bpmn,
            executable(
                "Camunda Platform",
                &around(r#"<businessRuleTask id="x" camunda:decisionRef="d"/>"#),
            ),
            &[],
        ),
        case(
            "business rule task, Camunda 7 class",
            Bpmn,
            executable(
                "Camunda Platform",
                &around(r#"<businessRuleTask id="x" camunda:class="com.example.Rules"/>"#),
            ),
            &[],
        ),
        case(
            "business rule task, Camunda 7 delegate expression",
            Bpmn,
            executable(
                "Camunda Platform",
                &around(r#"<businessRuleTask id="x" camunda:delegateExpression="${rules}"/>"#),
            ),
            &[],
        ),
        case(
            "business rule task, decision by expression",
            Bpmn,
            executable(
                "Camunda Cloud",
                &around(
                    r#"<businessRuleTask id="x"><extensionElements><zeebe:calledDecision decisionId="=which"/></extensionElements></businessRuleTask>"#,
                ),
            ),
            &[],
        ),
        case(
            "call activity without process, executable",
            Bpmn,
            executable("", &around(r#"<callActivity id="x"/>"#)),
            &["bpmn-missing-called-element"],
        ),
        case(
            "call activity without process, not executable",
            Bpmn,
            process(&around(r#"<callActivity id="x"/>"#)),
            &["bpmn-missing-called-element (warning)"],
        ),
        case(
            "call activity, Camunda 8 empty processId",
            Bpmn,
            executable(
                "Camunda Cloud",
                &around(
                    r#"<callActivity id="x"><extensionElements><zeebe:calledElement propagateAllChildVariables="false"/></extensionElements></callActivity>"#,
                ),
            ),
            &["bpmn-missing-called-element"],
        ),
        case(
            "call activity, Camunda 8 process",
            Bpmn,
            executable(
                "Camunda Cloud",
                &around(
                    r#"<callActivity id="x"><extensionElements><zeebe:calledElement processId="sub"/></extensionElements></callActivity>"#,
                ),
            ),
            &[],
        ),
        case(
            "call activity, calledElement",
            Bpmn,
            executable(
                "Camunda Platform",
                &around(r#"<callActivity id="x" calledElement="sub"/>"#),
            ),
            &[],
        ),
        case(
            "call activity, Camunda 7 case",
            Bpmn,
            executable(
                "Camunda Platform",
                &around(r#"<callActivity id="x" camunda:caseRef="case"/>"#),
            ),
            &[],
        ),
        case(
            "user task with two Camunda 7 forms, executable",
            Bpmn,
            executable(
                "Camunda Platform",
                &around(
                    r#"<userTask id="x" camunda:formKey="embedded:app:f.html" camunda:formRef="f"/>"#,
                ),
            ),
            &["bpmn-multiple-forms"],
        ),
        case(
            "user task with two forms, not executable",
            Bpmn,
            process(&around(
                r#"<userTask id="x" camunda:formKey="k" camunda:formRef="f"/>"#,
            )),
            &["bpmn-multiple-forms (warning)"],
        ),
        case(
            "user task with two Camunda 8 forms",
            Bpmn,
            executable(
                "Camunda Cloud",
                &around(
                    r#"<userTask id="x"><extensionElements><zeebe:formDefinition formId="f"/><zeebe:formDefinition formKey="camunda-forms:bpmn:g"/></extensionElements></userTask>"#,
                ),
            ),
            &["bpmn-multiple-forms"],
        ),
        case(
            "user task with one Camunda 8 form",
            Bpmn,
            executable(
                "Camunda Cloud",
                &around(
                    r#"<userTask id="x"><extensionElements><zeebe:formDefinition formId="f"/></extensionElements></userTask>"#,
                ),
            ),
            &[],
        ),
        case(
            "user task with one Camunda 7 form",
            Bpmn,
            executable(
                "Camunda Platform",
                &around(
                    r#"<userTask id="x" camunda:formRef="f" camunda:formRefBinding="latest"/>"#,
                ),
            ),
            &[],
        ),
    ]
}

fn dmn_cases() -> Vec<Case> {
    use Kind::{Bpmn, Dmn};
    let requirements = |href: &str| {
        dmn(&format!(
            r##"<inputData id="in" name="In"/><businessKnowledgeModel id="bkm" name="B"/><knowledgeSource id="ks" name="K"/>
<decision id="d" name="D"><informationRequirement id="ir"><requiredInput href="{href}"/></informationRequirement>
<knowledgeRequirement id="kr"><requiredKnowledge href="#bkm"/></knowledgeRequirement>
<authorityRequirement id="ar"><requiredAuthority href="#ks"/></authorityRequirement></decision>
<decision id="d2" name="D2"><informationRequirement id="ir2"><requiredDecision href="#d"/></informationRequirement></decision>"##
        ))
    };
    vec![
        case("valid table", Dmn, table("", COLUMNS, RULE), &[]),
        case("DMN 1.3 namespace", Dmn, dmn_in("https://www.omg.org/spec/DMN/20191111/MODEL/", r#"<decision id="d" name="D"/>"#), &[]),
        case("DMN 1.4 namespace", Dmn, dmn_in("https://www.omg.org/spec/DMN/20211108/MODEL/", r#"<decision id="d" name="D"/>"#), &[]),
        case("DMN 1.2 namespace", Dmn, dmn_in("http://www.omg.org/spec/DMN/20180521/MODEL/", r#"<decision id="d" name="D"/>"#), &["dmn-old-namespace (warning)"]),
        case("DMN 1.1 namespace", Dmn, dmn_in("http://www.omg.org/spec/DMN/20151101/dmn.xsd", r#"<decision id="d" name="D"/>"#), &["dmn-old-namespace (warning)"]),
        case("unknown namespace", Dmn, dmn_in("urn:not-dmn", ""), &["dmn-wrong-root"]),
        case("BPMN given as DMN", Dmn, process(FLOW), &["dmn-wrong-root"]),
        case("DMN given as BPMN", Bpmn, table("", COLUMNS, RULE), &["bpmn-wrong-root"]),
        case("duplicate id", Dmn, dmn(r#"<decision id="d" name="D"/><inputData id="d" name="I"/>"#), &["dmn-duplicate-id"]),
        case("no decision", Dmn, dmn(r#"<inputData id="i" name="I"/>"#), &["dmn-no-decision (warning)"]),
        case("requirements resolved", Dmn, requirements("#in"), &[]),
        case("requirement to a missing id", Dmn, requirements("#nope"), &["dmn-unresolved-reference"]),
        case("requirement to the wrong kind", Dmn, requirements("#bkm"), &["dmn-unresolved-reference"]),
        case("requirement without href", Dmn, dmn(r#"<decision id="d" name="D"><informationRequirement id="ir"><requiredDecision/></informationRequirement></decision>"#), &["dmn-unresolved-reference"]),
        case("requirement in the model's own namespace", Dmn, requirements("urn:dmn#in"), &[]),
        case("requirement into an imported model", Dmn, requirements("urn:other#in").replace("<inputData", r#"<import namespace="urn:other" name="o" importType="https://www.omg.org/spec/DMN/20230324/MODEL/"/><inputData"#), &[]),
        case("requirement into a model imported by location", Dmn, requirements("other.dmn#in").replace("<inputData", r#"<import namespace="urn:other" locationURI="other.dmn" name="o" importType="https://www.omg.org/spec/DMN/20230324/MODEL/"/><inputData"#), &[]),
        case("requirement into an unimported model", Dmn, requirements("urn:other#in"), &["dmn-unresolved-import (warning)"]),
        case("every hit policy", Dmn, dmn(&["UNIQUE", "FIRST", "PRIORITY", "ANY", "COLLECT", "RULE ORDER", "OUTPUT ORDER"].iter().enumerate().map(|(i, h)| format!(r#"<decision id="d{i}" name="D"><decisionTable hitPolicy="{h}"><output name="o"/></decisionTable></decision>"#)).collect::<String>()), &[]),
        case("invalid hit policy", Dmn, table(r#" hitPolicy="LAST""#, COLUMNS, RULE), &["dmn-invalid-hit-policy"]),
        case("lowercase hit policy", Dmn, table(r#" hitPolicy="unique""#, COLUMNS, RULE), &["dmn-invalid-hit-policy"]),
        case("COLLECT with SUM", Dmn, table(r#" hitPolicy="COLLECT" aggregation="SUM""#, COLUMNS, RULE), &[]),
        case("COLLECT with AVG", Dmn, table(r#" hitPolicy="COLLECT" aggregation="AVG""#, COLUMNS, RULE), &["dmn-invalid-aggregation"]),
        case("aggregation without COLLECT", Dmn, table(r#" hitPolicy="FIRST" aggregation="COUNT""#, COLUMNS, RULE), &["dmn-invalid-aggregation"]),
        case("aggregation with default hit policy", Dmn, table(r#" aggregation="MAX""#, COLUMNS, RULE), &["dmn-invalid-aggregation"]),
        case("table without output", Dmn, table("", r#"<input id="i1"><inputExpression><text>a</text></inputExpression></input>"#, ""), &["dmn-no-output"]),
        case("rule with too few input entries", Dmn, table("", COLUMNS, r#"<rule id="r"><outputEntry><text>1</text></outputEntry></rule>"#), &["dmn-rule-arity"]),
        case("rule with too many output entries", Dmn, table("", COLUMNS, r#"<rule id="r"><inputEntry><text>-</text></inputEntry><outputEntry><text>1</text></outputEntry><outputEntry><text>2</text></outputEntry></rule>"#), &["dmn-rule-arity"]),
        case("table without inputs, rules with outputs only", Dmn, table("", r#"<output id="o"/>"#, r#"<rule id="r"><outputEntry><text>1</text></outputEntry><annotationEntry><text>n</text></annotationEntry></rule>"#), &[]),
        case("extension content with DMN-like names is ignored", Dmn, table("", COLUMNS, RULE).replace("</decisionTable>", r#"</decisionTable><extensionElements><x:rule xmlns:x="urn:x"/></extensionElements>"#), &[]),
    ]
}

pub const FORM: &str = r#"{
  "components": [
    { "label": "Name", "type": "textfield", "id": "Field_1", "key": "name" },
    { "label": "Address", "type": "group", "id": "Group_1", "components": [
      { "label": "Street", "type": "textfield", "id": "Field_2", "key": "street" }
    ] },
    { "type": "dynamiclist", "id": "List_1", "path": "items", "components": [
      { "label": "Item", "type": "textfield", "id": "Field_3", "key": "item" }
    ] }
  ],
  "type": "default",
  "id": "Form_1",
  "executionPlatform": "Camunda Cloud",
  "executionPlatformVersion": "8.5.0",
  "exporter": { "name": "Camunda Modeler", "version": "5.23.0" },
  "schemaVersion": 16
}"#;

fn form_cases() -> Vec<Case> {
    use Kind::Form;
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    vec![
        case("valid form with groups and lists", Form, FORM, &[]),
        case(
            "minimal form",
            Form,
            r#"{"id":"f","type":"default","components":[]}"#,
            &[],
        ),
        case("not JSON", Form, "{id: f}", &["form-malformed-json"]),
        case("empty", Form, "", &["form-malformed-json"]),
        case(
            "trailing garbage",
            Form,
            r#"{"id":"f","type":"default","components":[]} x"#,
            &["form-malformed-json"],
        ),
        case("too deep", Form, deep, &["form-too-deep"]),
        // `required` applies to objects only, so an array gets just the type error.
        case("not an object", Form, "[]", &["form-schema"]),
        case(
            "missing id",
            Form,
            r#"{"type":"default","components":[]}"#,
            &["form-schema"],
        ),
        case(
            "empty id",
            Form,
            r#"{"id":"","type":"default","components":[]}"#,
            &["form-schema"],
        ),
        case(
            "missing components",
            Form,
            r#"{"id":"f","type":"default"}"#,
            &["form-schema"],
        ),
        case(
            "wrong form type",
            Form,
            r#"{"id":"f","type":"custom","components":[]}"#,
            &["form-schema"],
        ),
        case(
            "schemaVersion not an integer",
            Form,
            r#"{"id":"f","type":"default","schemaVersion":"16","components":[]}"#,
            &["form-schema"],
        ),
        case(
            "component without type",
            Form,
            r#"{"id":"f","type":"default","components":[{"id":"a","key":"k"}]}"#,
            &["form-schema"],
        ),
        case(
            "nested component without type",
            Form,
            r#"{"id":"f","type":"default","components":[{"type":"group","components":[{"id":"a"}]}]}"#,
            &["form-schema"],
        ),
        case(
            "missing form type",
            Form,
            r#"{"id":"f","components":[]}"#,
            &["form-missing-type (warning)"],
        ),
        case(
            "duplicate component id across a group",
            Form,
            r#"{"id":"f","type":"default","components":[{"type":"text","id":"a"},{"type":"group","id":"g","components":[{"type":"text","id":"a"}]}]}"#,
            &["form-duplicate-component-id"],
        ),
    ]
}

fn request_cases() -> Vec<Case> {
    use Kind::Request;
    let deep = format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200));
    vec![
        case(
            "process by string",
            Request,
            r#"{"id":"r","process":"p"}"#,
            &[],
        ),
        case(
            "form by object, with name and extra data",
            Request,
            r#"{"id":"r","name":"Leave","form":{"id":"f","version":2},"x":[1]}"#,
            &[],
        ),
        case(
            "process and form",
            Request,
            r#"{"id":"r","process":{"id":"p"},"form":"f"}"#,
            &[],
        ),
        case("not JSON", Request, "{", &["request-malformed-json"]),
        case("too deep", Request, deep, &["request-too-deep"]),
        case(
            "not an object",
            Request,
            r#"["p"]"#,
            &["request-not-object"],
        ),
        case(
            "no id",
            Request,
            r#"{"process":"p"}"#,
            &["request-missing-id"],
        ),
        case(
            "empty id",
            Request,
            r#"{"id":" ","process":"p"}"#,
            &["request-invalid-field"],
        ),
        case(
            "numeric id",
            Request,
            r#"{"id":1,"process":"p"}"#,
            &["request-invalid-field"],
        ),
        case(
            "name not a string",
            Request,
            r#"{"id":"r","name":1,"process":"p"}"#,
            &["request-invalid-field"],
        ),
        case(
            "process empty",
            Request,
            r#"{"id":"r","process":""}"#,
            &["request-invalid-field"],
        ),
        case(
            "form object without id",
            Request,
            r#"{"id":"r","form":{"key":"f"}}"#,
            &["request-invalid-field"],
        ),
        case(
            "process null",
            Request,
            r#"{"id":"r","process":null,"form":"f"}"#,
            &["request-invalid-field"],
        ),
        case(
            "no reference",
            Request,
            r#"{"id":"r","name":"n"}"#,
            &["request-no-reference"],
        ),
    ]
}

/// Rules of `validate::validate` itself (its module has no table).
fn dispatcher_cases() -> Vec<Case> {
    let big = vec![b' '; draven_registry::validate::MAX_PAYLOAD_BYTES + 1];
    Kind::ALL
        .iter()
        .map(|kind| {
            case(
                "payload too large",
                *kind,
                big.clone(),
                &["payload-too-large"],
            )
        })
        .collect()
}

fn all_cases() -> Vec<Case> {
    [
        dispatcher_cases(),
        xml_cases(),
        bpmn_structure_cases(),
        bpmn_flow_cases(),
        bpmn_engine_cases(),
        dmn_cases(),
        form_cases(),
        request_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[test]
fn every_case_yields_exactly_its_rule_codes() {
    let failures: Vec<String> = all_cases()
        .into_iter()
        .filter_map(|c| {
            check(c.kind, &c.input, &c.expect)
                .err()
                .map(|e| format!("{} ({:?}): {e}", c.name, c.kind))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The rule codes listed in a module's doc table (lines `//! | `code` | …`).
fn documented_codes(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `"))
        .filter_map(|rest| rest.split('`').next())
        .collect()
}

#[test]
fn every_documented_rule_code_has_a_failing_case() {
    let sources = [
        include_str!("../../src/validate/xml.rs"),
        include_str!("../../src/validate/bpmn.rs"),
        include_str!("../../src/validate/dmn.rs"),
        include_str!("../../src/validate/form.rs"),
        include_str!("../../src/validate/request.rs"),
    ];
    let mut documented: BTreeSet<&str> = sources.iter().flat_map(|s| documented_codes(s)).collect();
    assert!(
        documented.len() > 40,
        "doc tables not found: {documented:?}"
    );
    documented.insert("payload-too-large");
    let covered: BTreeSet<&str> = all_cases()
        .iter()
        .flat_map(|c| c.expect.iter().map(|e| e.trim_end_matches(" (warning)")))
        .collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    let undocumented: Vec<_> = covered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "rule codes without a failing case: {missing:?}"
    );
    assert!(
        undocumented.is_empty(),
        "rule codes used but not documented: {undocumented:?}"
    );
    for code in &documented {
        let prefix = code.split('-').next().unwrap_or("");
        let allowed = ["xml", "bpmn", "dmn", "form", "request"].contains(&prefix)
            || *code == "payload-too-large";
        assert!(allowed, "{code} lacks a kind prefix");
        assert!(
            code.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{code} is not kebab-case"
        );
    }
}
