//! The XML front end shared by the BPMN and DMN validators: it turns payload bytes into a
//! `roxmltree` document, or into exactly one `xml-*` finding explaining why it cannot.
//!
//! It owns decoding (UTF-8, UTF-16 with a byte-order mark, ISO-8859-1 when declared), a cheap
//! linear pre-scan that refuses DTDs and bounds nesting, attribute and namespace costs *before*
//! any tree is built, parsing under a node limit, and the byte offset → line/column conversion
//! used by every XML finding. It must never expand an entity, never recurse over the input, and
//! never panic: hostile input becomes a finding.
//!
//! | code | severity | meaning |
//! |---|---|---|
//! | `xml-unsupported-encoding` | error | bytes are not UTF-8, UTF-16 with a BOM, or declared ISO-8859-1 |
//! | `xml-dtd-forbidden` | error | a `<!DOCTYPE …>` or other markup declaration is present (never expanded) |
//! | `xml-too-deep` | error | elements are nested deeper than [`MAX_DEPTH`] |
//! | `xml-too-complex` | error | too many attributes on one element, or too many namespace declarations |
//! | `xml-too-many-nodes` | error | the document has more than [`NODES_LIMIT`] nodes |
//! | `xml-malformed` | error | the document is not well-formed XML (position from the parser) |
//! | `xml-too-many-findings` | error if an omitted finding is an error, else warning | more than [`MAX_FINDINGS`] findings; the rest are counted, not listed |

use std::borrow::Cow;
use std::collections::HashSet;

use roxmltree::{Document, Node, ParsingOptions};

use super::{Finding, Severity, MAX_DEPTH};

/// Most nodes (elements, text, comments) a document may have. The largest real model in the
/// test corpus has about 20,000; this bound keeps a huge flat document's cost predictable.
pub const NODES_LIMIT: u32 = 500_000;
/// Most attributes (namespace declarations included) on one element. roxmltree checks
/// duplicate attributes pairwise, so this bounds a quadratic cost; real models use < 40.
pub const MAX_ATTRIBUTES: usize = 128;
/// Most distinct namespace declarations in a document. Every QName lookup scans the namespaces
/// in scope, so this bounds the cost of each reference; real models declare fewer than 40.
pub const MAX_NAMESPACE_DECLARATIONS: usize = 256;
/// Most findings one XML payload reports; past this only their number is kept, so a hostile
/// document cannot make the report itself huge.
pub const MAX_FINDINGS: usize = 1000;
/// Budget for in-scope namespaces copied to elements that declare their own: roxmltree copies
/// the whole inherited scope to each such element, which is quadratic in memory otherwise.
const NAMESPACE_SCOPE_BUDGET: usize = 10_000_000;

/// The unqualified attribute BPMN and DMN use as element identity.
pub const ID: &str = "id";

/// A finding without a position.
pub fn finding(rule: &'static str, severity: Severity, message: String) -> Finding {
    Finding {
        rule,
        severity,
        message,
        line: None,
        column: None,
        pointer: None,
        element: None,
    }
}

/// A finding positioned at a 1-based line and column.
fn finding_at_pos(rule: &'static str, message: String, (line, column): (u32, u32)) -> Finding {
    Finding {
        line: Some(line),
        column: Some(column),
        ..finding(rule, Severity::Error, message)
    }
}

/// Decodes payload bytes to text. Borrowed for UTF-8, owned otherwise.
pub fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, Finding> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return decode_utf8(rest);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return decode_utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return decode_utf16(rest, u16::from_be_bytes);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Cow::Borrowed(text)),
        // Older tools (the OMG reference models among them) declare ISO-8859-1, where every
        // byte is the code point of the same value.
        Err(_) if declares_latin1(bytes) => {
            Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()))
        }
        Err(_) => decode_utf8(bytes),
    }
}

fn decode_utf8(bytes: &[u8]) -> Result<Cow<'_, str>, Finding> {
    std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        // The prefix is valid UTF-8 by construction, so this never falls back.
        let before = std::str::from_utf8(valid).unwrap_or_default();
        let pos = Positions::new(before).at(before.len());
        finding_at_pos(
            "xml-unsupported-encoding",
            "payload is not valid UTF-8 (and does not declare ISO-8859-1 or start with a UTF-16 byte-order mark)"
                .to_string(),
            pos,
        )
    })
}

fn decode_utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<Cow<'static, str>, Finding> {
    let units = bytes.chunks(2).map(|pair| match pair {
        [a, b] => unit([*a, *b]),
        // An odd trailing byte cannot be UTF-16; an unpaired surrogate makes decoding fail.
        _ => 0xD800,
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map(Cow::Owned)
        .map_err(|_| {
            finding(
                "xml-unsupported-encoding",
                Severity::Error,
                "payload has a UTF-16 byte-order mark but is not valid UTF-16".to_string(),
            )
        })
}

/// Whether the XML declaration names ISO-8859-1 (or its alias latin1).
fn declares_latin1(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(200)];
    let Some(end) = find(head, 0, b"?>") else {
        return false;
    };
    let decl = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    decl.starts_with("<?xml")
        && ["iso-8859-1", "iso8859-1", "latin1", "latin-1"]
            .iter()
            .any(|name| {
                decl.contains(&format!("\"{name}\"")) || decl.contains(&format!("'{name}'"))
            })
}

/// Pre-scans `text`, then parses it. The pre-scan runs first so that a DTD is refused without
/// the parser ever reading it, and so that no input can make the parser's work superlinear.
pub fn parse(text: &str) -> Result<Document<'_>, Finding> {
    prescan(text)?;
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
    };
    Document::parse_with_options(text, options).map_err(|e| parse_error(text, &e))
}

fn parse_error(text: &str, error: &roxmltree::Error) -> Finding {
    use roxmltree::Error as E;
    let pos = error.pos();
    let (rule, message) = match error {
        E::DtdDetected | E::EntityReferenceLoop(_) => {
            ("xml-dtd-forbidden", "DTDs are not accepted".to_string())
        }
        E::NodesLimitReached => (
            "xml-too-many-nodes",
            format!("the document has more than {NODES_LIMIT} nodes"),
        ),
        E::AttributesLimitReached | E::NamespacesLimitReached => {
            ("xml-too-complex", error.to_string())
        }
        _ => ("xml-malformed", error.to_string()),
    };
    let mut f = finding_at_pos(rule, message, (pos.row, pos.col));
    // Errors without a place in the text (limits, missing root) report 1:1; drop that.
    if text.is_empty() || matches!(error, E::NodesLimitReached | E::NoRootNode | E::DtdDetected) {
        (f.line, f.column) = (None, None);
    }
    f
}

/// The pre-scanner's view of one element's start tag.
struct Tag {
    end: usize,
    self_closing: bool,
    attributes: usize,
    namespace_declarations: usize,
}

/// A refusal by the pre-scan: rule code and message, positioned by the caller.
type Refusal = (&'static str, String);

/// Linear scan of the markup: tracks nesting depth and namespace scope cost without building
/// anything, skipping comments, CDATA and processing instructions. Malformed input is left to
/// the parser; this only refuses what would be dangerous or too deep.
fn prescan(text: &str) -> Result<(), Finding> {
    let mut scan = Prescan {
        bytes: text.as_bytes(),
        scope: Vec::new(),
        in_scope: 0,
        budget: NAMESPACE_SCOPE_BUDGET,
        distinct: HashSet::new(),
    };
    let mut i = 0;
    while let Some(start) = find(scan.bytes, i, b"<") {
        i = scan.markup(start).map_err(|(rule, message)| {
            finding_at_pos(rule, message, Positions::new(text).at(start))
        })?;
    }
    Ok(())
}

struct Prescan<'t> {
    bytes: &'t [u8],
    /// Namespace declarations of each open element; its length is the nesting depth.
    scope: Vec<usize>,
    /// Sum of `scope`: the declarations a new element would inherit.
    in_scope: usize,
    budget: usize,
    distinct: HashSet<&'t [u8]>,
}

impl<'t> Prescan<'t> {
    /// Handles the markup at `start` (a `<`); returns where scanning resumes.
    fn markup(&mut self, start: usize) -> Result<usize, Refusal> {
        let b = self.bytes;
        let rest = &b[start..];
        let past = |from: usize, end: &[u8]| find(b, from, end).map_or(b.len(), |e| e + end.len());
        if rest.starts_with(b"<!--") {
            Ok(past(start + 4, b"-->"))
        } else if rest.starts_with(b"<![CDATA[") {
            Ok(past(start + 9, b"]]>"))
        } else if rest.starts_with(b"<?") {
            Ok(past(start + 2, b"?>"))
        } else if rest.starts_with(b"<!") {
            Err((
                "xml-dtd-forbidden",
                "DTDs and entity declarations are not accepted".to_string(),
            ))
        } else if rest.starts_with(b"</") {
            self.in_scope = self.in_scope.saturating_sub(self.scope.pop().unwrap_or(0));
            Ok(past(start, b">"))
        } else {
            let tag = scan_tag(b, start + 1, &mut self.distinct);
            self.open(&tag)?;
            Ok(tag.end)
        }
    }

    fn open(&mut self, tag: &Tag) -> Result<(), Refusal> {
        if tag.attributes > MAX_ATTRIBUTES {
            return Err((
                "xml-too-complex",
                format!("an element has more than {MAX_ATTRIBUTES} attributes"),
            ));
        }
        if self.distinct.len() > MAX_NAMESPACE_DECLARATIONS {
            let message =
                format!("more than {MAX_NAMESPACE_DECLARATIONS} distinct namespace declarations");
            return Err(("xml-too-complex", message));
        }
        if tag.namespace_declarations > 0 {
            self.budget = self
                .budget
                .saturating_sub(self.in_scope + tag.namespace_declarations);
            if self.budget == 0 {
                return Err((
                    "xml-too-complex",
                    "too many namespace declarations in scope".to_string(),
                ));
            }
        }
        if !tag.self_closing {
            self.scope.push(tag.namespace_declarations);
            self.in_scope += tag.namespace_declarations;
            if self.scope.len() > MAX_DEPTH {
                return Err((
                    "xml-too-deep",
                    format!("elements are nested deeper than {MAX_DEPTH} levels"),
                ));
            }
        }
        Ok(())
    }
}

/// Scans a start tag from just after its `<` to just after its `>`, counting attributes
/// (attribute values are skipped whole, so a `>` inside quotes does not end the tag).
fn scan_tag<'a>(b: &'a [u8], from: usize, distinct: &mut HashSet<&'a [u8]>) -> Tag {
    let mut tag = Tag {
        end: b.len(),
        self_closing: false,
        attributes: 0,
        namespace_declarations: 0,
    };
    let mut i = from;
    let mut after_space = false;
    while i < b.len() {
        match b[i] {
            b'>' => {
                tag.end = i + 1;
                tag.self_closing = i > from && b[i - 1] == b'/';
                return tag;
            }
            quote @ (b'"' | b'\'') => {
                i = b[i + 1..]
                    .iter()
                    .position(|&c| c == quote)
                    .map_or(b.len(), |p| i + 1 + p);
                after_space = false;
            }
            c if c.is_ascii_whitespace() => after_space = true,
            b'/' | b'=' => after_space = false,
            _ if after_space => {
                after_space = false;
                tag.attributes += 1;
                if is_namespace_declaration(&b[i..]) {
                    tag.namespace_declarations += 1;
                    // A bounded window: scanning to the tag's end here would be quadratic
                    // in a tag that never closes. The key only needs to tell URIs apart.
                    let window = &b[i..b.len().min(i + 512)];
                    let len = window
                        .iter()
                        .position(|c| c.is_ascii_whitespace() || *c == b'>')
                        .unwrap_or(window.len());
                    distinct.insert(&window[..len]);
                }
            }
            _ => {}
        }
        i += 1;
    }
    tag
}

fn is_namespace_declaration(attr: &[u8]) -> bool {
    attr.strip_prefix(b"xmlns").is_some_and(|rest| {
        matches!(
            rest.first(),
            Some(b':' | b'=' | b' ' | b'\t' | b'\r' | b'\n')
        )
    })
}

/// The first occurrence of `needle` in `haystack` at or after `from`.
fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let tail = haystack.get(from..)?;
    tail.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// Converts byte offsets in one text to 1-based (line, column), counting columns in characters
/// and lines by `\n` as roxmltree does. A lookup costs O(BLOCK): checkpoints every
/// `BLOCK` bytes keep a document with thousands of findings from costing O(n) per finding.
pub struct Positions<'t> {
    text: &'t str,
    /// Per block: lines before the block, chars before the block, and the byte offset just
    /// after the last `\n` before the block (the start of the line the block begins in).
    blocks: Vec<(u32, usize, usize)>,
}

const BLOCK: usize = 1024;

impl<'t> Positions<'t> {
    pub fn new(text: &'t str) -> Self {
        let bytes = text.as_bytes();
        // One entry per block that an offset in 0..=len can fall in, the last maybe empty.
        let count = bytes.len() / BLOCK + 1;
        let mut blocks = Vec::with_capacity(count);
        let (mut lines, mut chars, mut line_start) = (0u32, 0usize, 0usize);
        for n in 0..count {
            blocks.push((lines, chars, line_start));
            let chunk = bytes
                .get(n * BLOCK..bytes.len().min((n + 1) * BLOCK))
                .unwrap_or_default();
            for (k, &c) in chunk.iter().enumerate() {
                if c == b'\n' {
                    lines = lines.saturating_add(1);
                    line_start = n * BLOCK + k + 1;
                }
                chars += usize::from(!is_continuation(c));
            }
        }
        Positions { text, blocks }
    }

    /// The 1-based line and column of byte offset `pos` (clamped to the text).
    pub fn at(&self, pos: usize) -> (u32, u32) {
        let pos = pos.min(self.text.len());
        let bytes = self.text.as_bytes();
        let block = pos / BLOCK;
        let Some(&(lines, _, carried_start)) = self.blocks.get(block) else {
            return (1, 1);
        };
        let block_start = (block * BLOCK).min(pos);
        let local = &bytes[block_start..pos];
        let newlines = local.iter().filter(|&&c| c == b'\n').count();
        let line_start = local
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(carried_start, |p| block_start + p + 1);
        let column = self.chars_before(pos) - self.chars_before(line_start) + 1;
        let line = lines
            .saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX))
            .saturating_add(1);
        (line, u32::try_from(column).unwrap_or(u32::MAX))
    }

    fn chars_before(&self, pos: usize) -> usize {
        let block = pos / BLOCK;
        let (_, chars, _) = self.blocks.get(block).copied().unwrap_or((0, 0, 0));
        let from = (block * BLOCK).min(pos);
        chars
            + self.text.as_bytes()[from..pos]
                .iter()
                .filter(|&&c| !is_continuation(c))
                .count()
    }

    /// A finding positioned at `node`, naming its `id` when it has one.
    pub fn finding(
        &self,
        node: Node,
        rule: &'static str,
        severity: Severity,
        message: String,
    ) -> Finding {
        let (line, column) = self.at(node.range().start);
        Finding {
            line: Some(line),
            column: Some(column),
            element: node.attribute(ID).map(str::to_string),
            ..finding(rule, severity, message)
        }
    }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// The findings of one XML payload, at most [`MAX_FINDINGS`] of them listed.
#[derive(Default)]
pub struct Findings {
    listed: Vec<Finding>,
    omitted: usize,
    omitted_errors: usize,
}

impl Findings {
    /// Adds a finding at `node`; past the limit only counts it (and skips computing where).
    pub fn add(
        &mut self,
        at: &Positions,
        node: Node,
        rule: &'static str,
        severity: Severity,
        message: String,
    ) {
        if self.listed.len() < MAX_FINDINGS {
            self.listed.push(at.finding(node, rule, severity, message));
        } else {
            self.omitted += 1;
            self.omitted_errors += usize::from(severity == Severity::Error);
        }
    }

    /// The listed findings, plus one `xml-too-many-findings` summing up the omitted ones.
    pub fn into_vec(mut self) -> Vec<Finding> {
        if self.omitted > 0 {
            let severity = if self.omitted_errors > 0 {
                Severity::Error
            } else {
                Severity::Warning
            };
            let message = format!(
                "{} more findings omitted ({} of them errors); fix the ones above first",
                self.omitted, self.omitted_errors
            );
            self.listed
                .push(finding("xml-too-many-findings", severity, message));
        }
        self.listed
    }
}

/// Whether `node` is an element named `local` in namespace `ns`.
pub fn is(node: Node, ns: &str, local: &str) -> bool {
    node.is_element() && node.tag_name().name() == local && node.tag_name().namespace() == Some(ns)
}

/// The local part of a QName-valued reference (`tns:Msg` → `Msg`). BPMN and DMN ids are
/// NCNames, so they never contain a colon themselves.
pub fn local_part(value: &str) -> &str {
    value.rsplit_once(':').map_or(value, |(_, local)| local)
}

/// The namespace a QName-valued reference's prefix is bound to at `node`, if it has a prefix.
pub fn qname_namespace<'a>(node: Node<'a, '_>, value: &str) -> Option<&'a str> {
    let (prefix, _) = value.split_once(':')?;
    node.lookup_namespace_uri(Some(prefix))
}

/// An element's text content, trimmed; empty when it has none.
pub fn text_of<'a>(node: Node<'a, '_>) -> &'a str {
    node.text().map_or("", str::trim)
}
