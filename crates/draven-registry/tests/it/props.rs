//! Property tests: no input makes a validator panic, every input gets a report, and the same
//! input always gets the same report. Case counts are modest so a debug build stays fast;
//! `cargo fuzz` (see `fuzz/`) explores far more. Failures are not persisted to files: the
//! shrunk input is printed, and a regression belongs in the case table.

use std::sync::OnceLock;

use draven_registry::validate::xml::Positions;
use draven_registry::validate::{validate, Kind};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::cases::{process, FLOW, FORM};
use crate::corpus::corpus_files;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Corpus payloads plus the hand-written JSON ones, read once.
fn seeds() -> &'static [(Vec<u8>, Kind)] {
    static SEEDS: OnceLock<Vec<(Vec<u8>, Kind)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<(Vec<u8>, Kind)> = corpus_files()
            .into_iter()
            .map(|(path, kind)| (std::fs::read(path).expect("corpus file"), kind))
            .collect();
        seeds.push((FORM.as_bytes().to_vec(), Kind::Form));
        seeds.push((
            br#"{"id":"r","name":"n","process":{"id":"p"},"form":"f"}"#.to_vec(),
            Kind::Request,
        ));
        seeds.push((process(FLOW).into_bytes(), Kind::Bpmn));
        seeds
    })
}

/// One edit of a payload. Fragments are the tokens most likely to change what a parser sees.
#[derive(Clone, Debug)]
enum Mutation {
    Set(Index, u8),
    Insert(Index, &'static str),
    Delete(Index, usize),
    Duplicate(Index, usize, Index),
    Truncate(Index),
}

const FRAGMENTS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "\"",
    "'",
    "&",
    "&amp;",
    "&#0;",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<?",
    "?>",
    "<!DOCTYPE d>",
    "xmlns=\"urn:x\"",
    "xmlns:p=\"urn:p\"",
    "p:",
    "id=\"dup\"",
    "<task id=\"dup\"/>",
    "<sequenceFlow id=\"q\" sourceRef=\"dup\" targetRef=\"zz\"/>",
    "default=\"nope\"",
    "\u{0}",
    "\u{FEFF}",
    "é",
    "\n",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"id\"",
    "\"components\"",
    "null",
    "1e999",
    "\\u0000",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), proptest::sample::select(FRAGMENTS))
            .prop_map(|(i, f)| Mutation::Insert(i, f)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1usize..256, any::<Index>())
            .prop_map(|(i, n, at)| Mutation::Duplicate(i, n, at)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len().max(1);
    match mutation {
        Mutation::Set(i, b) => {
            if !bytes.is_empty() {
                let at = i.index(len);
                bytes[at] = *b;
            }
        }
        Mutation::Insert(i, fragment) => {
            let at = i.index(len + 1).min(bytes.len());
            bytes.splice(at..at, fragment.bytes());
        }
        Mutation::Delete(i, n) => {
            let at = i.index(len).min(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
        Mutation::Duplicate(i, n, to) => {
            let from = i.index(len).min(bytes.len());
            let slice = bytes[from..(from + n).min(bytes.len())].to_vec();
            let at = to.index(len + 1).min(bytes.len());
            bytes.splice(at..at, slice);
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
    }
}

/// Validates twice and requires identical reports (and, implicitly, no panic).
fn deterministic(kind: Kind, bytes: &[u8]) -> Result<(), TestCaseError> {
    let first = validate(kind, bytes);
    let second = validate(kind, bytes);
    prop_assert_eq!(first, second);
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_get_a_report(bytes in vec(any::<u8>(), 0..1024)) {
        for kind in Kind::ALL {
            deterministic(kind, &bytes)?;
        }
    }

    #[test]
    fn arbitrary_text_gets_a_report(text in "[<>/a-z:=\"' !?\\[\\]{}&;#-]{0,400}") {
        for kind in Kind::ALL {
            deterministic(kind, text.as_bytes())?;
        }
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn mutated_seeds_get_a_report(seed in any::<Index>(), mutations in vec(mutation(), 1..6)) {
        let (original, kind) = seed.get(seeds());
        let mut bytes = original.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        deterministic(*kind, &bytes)?;
    }

    #[test]
    fn seeds_of_one_kind_get_a_report_as_any_kind(seed in any::<Index>()) {
        let (bytes, _) = seed.get(seeds());
        for kind in Kind::ALL {
            deterministic(kind, bytes)?;
        }
    }

    #[test]
    fn positions_agree_with_roxmltree(
        text in "[a-z \n\té€𝄞]{0,3000}",
        offsets in vec(any::<Index>(), 1..16),
    ) {
        let xml = format!("<r>{text}</r>");
        let doc = roxmltree::Document::parse(&xml).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let positions = Positions::new(&xml);
        for offset in offsets {
            let mut at = offset.index(xml.len() + 1);
            while !xml.is_char_boundary(at) {
                at -= 1;
            }
            let expected = doc.text_pos_at(at);
            prop_assert_eq!(positions.at(at), (expected.row, expected.col), "offset {}", at);
        }
    }
}
