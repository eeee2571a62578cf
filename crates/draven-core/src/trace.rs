//! W3C Trace Context (`traceparent`): parsing, formatting and child spans.
//!
//! Draven accepts a caller's `traceparent`, logs its `trace_id`/`span_id`, and passes a child
//! context to everything it calls (pipelines, runners, functions). Randomness is the caller's
//! to supply, so this stays pure.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex into `out` (twice the length of `bytes`). On every request's path: no
/// formatting machinery, no allocation.
fn hex_to(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_to(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

impl TraceContext {
    /// Parses a `traceparent` header (version 00, or a future version read as 00). Invalid
    /// values (all-zero ids, bad hex, wrong lengths) give `None`, and the caller starts a trace.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut ctx = TraceContext {
            trace_id: [0; 16],
            span_id: [0; 8],
            sampled: false,
        };
        hex_into(trace, &mut ctx.trace_id)?;
        hex_into(span, &mut ctx.span_id)?;
        let mut f = [0u8; 1];
        hex_into(flags, &mut f)?;
        ctx.sampled = f[0] & 1 == 1;
        if ctx.trace_id == [0; 16] || ctx.span_id == [0; 8] {
            return None;
        }
        Some(ctx)
    }

    pub fn root(trace_id: [u8; 16], span_id: [u8; 8]) -> TraceContext {
        TraceContext {
            trace_id,
            span_id,
            sampled: true,
        }
    }

    /// The same trace, a new span (ours, or the one we open for an outgoing call).
    pub fn child(&self, span_id: [u8; 8]) -> TraceContext {
        TraceContext { span_id, ..*self }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_to(&self.trace_id, &mut buf[3..35]);
        hex_to(&self.span_id, &mut buf[36..52]);
        hex_to(&[self.sampled as u8], &mut buf[53..55]);
        f.write_str(std::str::from_utf8(&buf).expect("ASCII"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w3c_examples() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(h).unwrap();
        assert_eq!(ctx.to_string(), h);
        assert!(ctx.sampled);
        let child = ctx.child([1; 8]);
        assert_eq!(child.trace_id, ctx.trace_id);
        assert_eq!(
            child.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0101010101010101-01"
        );
        assert!(
            !TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled
        );
        // A future version may append fields.
        assert!(TraceContext::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        )
        .is_some());
    }

    #[test]
    fn invalid_headers() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }
}
