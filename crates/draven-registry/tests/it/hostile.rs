//! Hostile payloads: each must come back as a finding, quickly, without exhausting the stack
//! or memory. Time bounds are generous (debug build, shared 2-core machine); the point is that
//! the work is linear, not that it is fast.

use std::time::{Duration, Instant};

use draven_registry::validate::{validate, Kind, Report};

use crate::cases::{around, definitions, process, BILLION_LAUGHS};

/// Validates and returns the report and the rule codes, asserting the time bound.
fn timed(kind: Kind, input: &[u8], bound: Duration) -> (Report, Vec<&'static str>) {
    let start = Instant::now();
    let report = validate(kind, input);
    let took = start.elapsed();
    assert!(
        took < bound,
        "{kind:?} took {took:?} (bound {bound:?}) for {} bytes",
        input.len()
    );
    let rules = report.findings.iter().map(|f| f.rule).collect();
    (report, rules)
}

#[test]
fn billion_laughs_is_refused_without_expansion() {
    for kind in [Kind::Bpmn, Kind::Dmn] {
        let (report, rules) = timed(kind, BILLION_LAUGHS.as_bytes(), Duration::from_millis(500));
        assert_eq!(rules, ["xml-dtd-forbidden"]);
        assert_eq!(report.findings[0].line, Some(2), "points at the DOCTYPE");
    }
}

#[test]
fn quadratic_blowup_entities_are_refused() {
    let big = "x".repeat(100_000);
    let input = format!(
        "<!DOCTYPE d [<!ENTITY a \"{big}\">]><d>{}</d>",
        "&a;".repeat(10_000)
    );
    let (_, rules) = timed(Kind::Dmn, input.as_bytes(), Duration::from_secs(1));
    assert_eq!(rules, ["xml-dtd-forbidden"]);
}

#[test]
fn hundred_thousand_nested_elements_are_a_finding() {
    let depth = 100_000;
    let closed = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    let unclosed = "<definitions>".repeat(depth);
    for (input, tag) in [(closed, "<a>"), (unclosed, "<definitions>")] {
        for kind in [Kind::Bpmn, Kind::Dmn] {
            let (report, rules) = timed(kind, input.as_bytes(), Duration::from_secs(2));
            assert_eq!(rules, ["xml-too-deep"]);
            let column = u32::try_from(tag.len() * 256 + 1).ok();
            assert_eq!(
                report.findings[0].column, column,
                "points at the 257th element"
            );
        }
    }
}

#[test]
fn deep_json_is_a_finding() {
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    for input in [arrays, objects] {
        let (_, form) = timed(Kind::Form, input.as_bytes(), Duration::from_secs(2));
        assert_eq!(form, ["form-too-deep"]);
        let (_, request) = timed(Kind::Request, input.as_bytes(), Duration::from_secs(2));
        assert_eq!(request, ["request-too-deep"]);
    }
}

#[test]
fn huge_flat_document_stops_at_the_node_limit() {
    // ~7 MB: just under the payload limit, far over the node limit.
    let input = definitions(&"<x/>".repeat(1_700_000));
    let (_, rules) = timed(Kind::Bpmn, input.as_bytes(), Duration::from_secs(10));
    assert_eq!(rules, ["xml-too-many-nodes"]);
}

#[test]
fn attribute_and_namespace_bombs_are_refused() {
    let attributes: String = (0..100_000).map(|i| format!(" a{i}=\"\"")).collect();
    let (_, rules) = timed(
        Kind::Bpmn,
        format!("<definitions{attributes}/>").as_bytes(),
        Duration::from_secs(2),
    );
    assert_eq!(rules, ["xml-too-complex"]);

    // Each child that declares a namespace copies the whole inherited scope in roxmltree.
    let root_ns: String = (0..1_000)
        .map(|i| format!(" xmlns:p{i}=\"urn:{i}\""))
        .collect();
    let children = "<c xmlns:q=\"urn:q\"/>".repeat(20_000);
    let input = format!("<definitions{root_ns}>{children}</definitions>");
    let (_, rules) = timed(Kind::Bpmn, input.as_bytes(), Duration::from_secs(2));
    assert_eq!(rules, ["xml-too-complex"]);

    // A start tag that never closes, full of namespace declarations.
    let unclosed = format!("<definitions{}", " xmlns:a=\"urn:a\"".repeat(400_000));
    let (_, rules) = timed(Kind::Bpmn, unclosed.as_bytes(), Duration::from_secs(2));
    assert_eq!(rules, ["xml-too-complex"]);

    let distinct: String = (0..5_000)
        .map(|i| format!("<c xmlns:q=\"urn:{i}\"/>"))
        .collect();
    let (_, rules) = timed(
        Kind::Dmn,
        format!("<definitions>{distinct}</definitions>").as_bytes(),
        Duration::from_secs(2),
    );
    assert_eq!(rules, ["xml-too-complex"]);
}

#[test]
fn many_findings_are_capped_and_stay_cheap() {
    // 200,000 duplicate ids on a single 2.8 MB line.
    let tasks = r#"<task id="t"/>"#.repeat(200_000);
    let input = process(&around(&format!(
        r#"<adHocSubProcess id="x">{tasks}</adHocSubProcess>"#
    )));
    let input = input.replace('\n', " ");
    let (report, rules) = timed(Kind::Bpmn, input.as_bytes(), Duration::from_secs(10));
    assert_eq!(rules.len(), 1001);
    let summary = report.findings.last().expect("summary");
    assert_eq!(summary.rule, "xml-too-many-findings");
    let expected = "198999 more findings omitted (198999 of them errors)";
    assert!(summary.message.starts_with(expected), "{}", summary.message);
    // The last listed duplicate is the 1,001st task (the first one is the original).
    let listed = &report.findings[999];
    let column = input
        .match_indices(r#"<task id="t"/>"#)
        .nth(1000)
        .map(|(at, _)| at + 1);
    assert_eq!(
        (listed.line, listed.column),
        (Some(1), column.and_then(|c| u32::try_from(c).ok()))
    );
}

#[test]
fn huge_forms_stay_bounded() {
    // 2.4 million components without `type` (7.2 MB): one finding each, were it not capped.
    let empty = vec!["{}"; 2_400_000].join(",");
    let input = format!(r#"{{"id":"f","type":"default","components":[{empty}]}}"#);
    let (report, _) = timed(Kind::Form, input.as_bytes(), Duration::from_secs(20));
    let schema = report
        .findings
        .iter()
        .filter(|f| f.rule == "form-schema")
        .count();
    assert_eq!(schema, 100);
    assert_eq!(report.findings[0].pointer.as_deref(), Some("/components/0"));

    let same_id = vec![r#"{"type":"text","id":"x"}"#; 200_000].join(",");
    let input = format!(r#"{{"id":"f","type":"default","components":[{same_id}]}}"#);
    let (report, rules) = timed(Kind::Form, input.as_bytes(), Duration::from_secs(20));
    assert_eq!(rules, vec!["form-duplicate-component-id"; 100]);
    assert!(report
        .findings
        .iter()
        .all(|f| f.message.chars().count() <= 301));
}
