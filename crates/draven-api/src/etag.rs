//! ETag / If-Match for optimistic concurrency on mutable resources.
//!
//! A resource's ETag is its revision number, quoted (`"3"`). A write may carry `If-Match`; a
//! stale one answers 412, and where a route requires it, a missing one answers 428.

use axum::http::{header, HeaderMap, HeaderValue};
use draven_core::{Error, ErrorCode};

pub fn etag(revision: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits are a valid header value")
}

/// The revision `If-Match` asks for: `None` when absent or `*` (unless `required`).
pub fn if_match(headers: &HeaderMap, required: bool) -> Result<Option<i64>, Error> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return if required {
            Err(Error::new(
                ErrorCode::PreconditionRequired,
                "send If-Match with the ETag you last read",
            ))
        } else {
            Ok(None)
        };
    };
    let v = v.to_str().unwrap_or_default().trim();
    if v == "*" {
        return Ok(None);
    }
    v.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            Error::new(
                ErrorCode::PreconditionFailed,
                format!("If-Match {v:?} is not an ETag this server issued"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = v {
            h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parsing() {
        assert_eq!(if_match(&headers(Some("\"3\"")), true).unwrap(), Some(3));
        assert_eq!(if_match(&headers(Some("W/\"4\"")), false).unwrap(), Some(4));
        assert_eq!(if_match(&headers(Some("*")), true).unwrap(), None);
        assert_eq!(if_match(&headers(None), false).unwrap(), None);
        assert_eq!(
            if_match(&headers(None), true).unwrap_err().code,
            ErrorCode::PreconditionRequired
        );
        assert_eq!(
            if_match(&headers(Some("\"abc\"")), false).unwrap_err().code,
            ErrorCode::PreconditionFailed
        );
        assert_eq!(etag(7), "\"7\"");
    }
}
