//! Request extractors whose rejections are problem+json naming what is wrong: the JSON body
//! (malformed → 400 with line and column; wrong type, missing or unknown field → 422 naming the
//! field; wrong content type → 415; too large → 413) and the query string.

use crate::problem::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use bytes::Bytes;
use draven_core::{Error, ErrorCode};
use serde::de::DeserializeOwned;

/// A JSON request body.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let raw = RawBody::from_request(req, state).await?;
        let m = raw.media_type.as_str();
        if m != "application/json" && !(m.starts_with("application/") && m.ends_with("+json")) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as Content-Type: application/json",
            ));
        }
        parse_json(&raw.bytes).map(Json).map_err(ApiError)
    }
}

/// A raw request body (artifact payloads), with its media type (parameters dropped, lowercased).
pub struct RawBody {
    pub media_type: String,
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let media_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the request body exceeds the configured limit",
                )
            } else {
                ApiError::new(
                    ErrorCode::MalformedBody,
                    "the request body could not be read",
                )
            }
        })?;
        Ok(RawBody { media_type, bytes })
    }
}

/// Parses JSON, turning serde's error into one that names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let msg = inner.to_string();
                    let field = field_of(&path, &msg);
                    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                    Err(Error::invalid(&field, msg))
                }
                _ => Err(Error::new(
                    ErrorCode::MalformedBody,
                    format!(
                        "malformed JSON at line {} column {}: {}",
                        inner.line(),
                        inner.column(),
                        inner
                    ),
                )),
            }
        }
    }
}

/// The JSON pointer of the offending field: the path, plus the field name serde mentions for
/// missing and unknown fields (the path then points at their parent).
fn field_of(path: &str, msg: &str) -> String {
    let named = ["unknown field `", "missing field `"].iter().find_map(|p| {
        msg.split_once(p)
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned())
    });
    let mut pointer = String::new();
    if path != "." {
        for seg in path.split('.') {
            let seg = seg.trim_end_matches(']');
            for part in seg.split('[') {
                if !part.is_empty() {
                    pointer.push('/');
                    pointer.push_str(part);
                }
            }
        }
    }
    if let Some(name) = named {
        // serde_path_to_error already ends the path with an unknown field's name, not a
        // missing one's.
        if !pointer.ends_with(&format!("/{name}")) {
            pointer.push('/');
            pointer.push_str(&name);
        }
    }
    if pointer.is_empty() {
        "/".into()
    } else {
        pointer
    }
}

/// Query parameters, with a problem+json rejection naming the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded_de(query);
        match de {
            Ok(v) => Ok(Query(v)),
            Err(msg) => {
                let field = ["unknown field `", "missing field `"]
                    .iter()
                    .find_map(|p| {
                        msg.split_once(p)
                            .and_then(|(_, r)| r.split_once('`'))
                            .map(|(n, _)| n.to_owned())
                    })
                    .unwrap_or_else(|| "query".into());
                Err(ApiError(Error::invalid(
                    &field,
                    format!("invalid query string: {msg}"),
                )))
            }
        }
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    // axum's own Query extractor, for its decoding; we only replace the rejection.
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| "query string is not valid".to_string())?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| {
            e.body_text()
                .replace("Failed to deserialize query string: ", "")
        })
}

/// Path parameters, with a problem+json rejection (a version number that is not a number is a
/// 404: no such version).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0)),
            Err(rejection) => Err(ApiError(Error::new(
                ErrorCode::NotFound,
                format!("no such resource: {}", rejection.body_text()),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        labels: Vec<u32>,
        inner: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    fn check(input: &str, code: ErrorCode, field: Option<&str>) {
        let err = parse_json::<Body>(input.as_bytes()).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            (code, field),
            "{input}: {err}"
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        check("{", ErrorCode::MalformedBody, None);
        check("not json", ErrorCode::MalformedBody, None);
        check(
            r#"{"labels": []}"#,
            ErrorCode::ValidationFailed,
            Some("/name"),
        );
        check(
            r#"{"name": 5, "labels": []}"#,
            ErrorCode::ValidationFailed,
            Some("/name"),
        );
        check(
            r#"{"name": "a", "labels": [1, "x"]}"#,
            ErrorCode::ValidationFailed,
            Some("/labels/1"),
        );
        check(
            r#"{"name": "a", "labels": [], "colour": 1}"#,
            ErrorCode::ValidationFailed,
            Some("/colour"),
        );
        check(
            r#"{"name": "a", "labels": [], "inner": {"flag": 1}}"#,
            ErrorCode::ValidationFailed,
            Some("/inner/flag"),
        );
        check(
            r#"{"name": "a", "labels": [], "inner": {"flag": true, "x": 1}}"#,
            ErrorCode::ValidationFailed,
            Some("/inner/x"),
        );
    }
}
