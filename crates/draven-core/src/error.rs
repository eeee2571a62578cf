//! The domain error type and its table of stable codes.
//!
//! One table maps each code to an HTTP status and a stable problem `type`; the API renders it as
//! RFC 9457 problem+json. Messages here are safe to show a client: a driver's or a library's own
//! error text never becomes a message (storage errors become `Internal`, whose detail is opaque).

use std::fmt;

/// Stable error codes. The string form is part of the public API (`type` of problem+json) and
/// must never change once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MalformedBody,
    ValidationFailed,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PreconditionFailed,
    PreconditionRequired,
    PayloadTooLarge,
    UnsupportedMediaType,
    IdempotencyKeyReused,
    IdempotencyKeyInFlight,
    RateLimited,
    /// A function's bounded queue is full (backpressure; retry after `Retry-After`).
    QueueFull,
    /// A synchronous invocation reached its deadline; the execution was stopped.
    InvocationTimedOut,
    /// The function ran and failed, or its process crashed.
    FunctionFailed,
    Unavailable,
    Internal,
    WebhookSignatureInvalid,
    WebhookReplayed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::MalformedBody,
        ErrorCode::ValidationFailed,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PreconditionFailed,
        ErrorCode::PreconditionRequired,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::IdempotencyKeyInFlight,
        ErrorCode::RateLimited,
        ErrorCode::QueueFull,
        ErrorCode::InvocationTimedOut,
        ErrorCode::FunctionFailed,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::WebhookSignatureInvalid,
        ErrorCode::WebhookReplayed,
    ];

    /// (stable slug, HTTP status, human title)
    const fn row(self) -> (&'static str, u16, &'static str) {
        match self {
            ErrorCode::MalformedBody => (
                "malformed-body",
                400,
                "The request body could not be parsed",
            ),
            ErrorCode::ValidationFailed => ("validation-failed", 422, "The request is not valid"),
            ErrorCode::Unauthenticated => ("unauthenticated", 401, "Authentication is required"),
            ErrorCode::Forbidden => ("forbidden", 403, "Not allowed"),
            ErrorCode::NotFound => ("not-found", 404, "Not found"),
            ErrorCode::MethodNotAllowed => ("method-not-allowed", 405, "Method not allowed"),
            ErrorCode::Conflict => ("conflict", 409, "Conflict with the current state"),
            ErrorCode::PreconditionFailed => {
                ("precondition-failed", 412, "The resource has changed")
            }
            ErrorCode::PreconditionRequired => {
                ("precondition-required", 428, "If-Match is required")
            }
            ErrorCode::PayloadTooLarge => {
                ("payload-too-large", 413, "The request body is too large")
            }
            ErrorCode::UnsupportedMediaType => {
                ("unsupported-media-type", 415, "Unsupported media type")
            }
            ErrorCode::IdempotencyKeyReused => (
                "idempotency-key-reused",
                422,
                "Idempotency-Key reused with a different request",
            ),
            ErrorCode::IdempotencyKeyInFlight => (
                "idempotency-key-in-flight",
                409,
                "A request with this Idempotency-Key is still being processed",
            ),
            ErrorCode::RateLimited => ("rate-limited", 429, "Too many requests"),
            ErrorCode::QueueFull => ("queue-full", 429, "The function's queue is full"),
            ErrorCode::InvocationTimedOut => {
                ("invocation-timed-out", 504, "The invocation timed out")
            }
            ErrorCode::FunctionFailed => ("function-failed", 502, "The function failed"),
            ErrorCode::Unavailable => ("unavailable", 503, "Service unavailable"),
            ErrorCode::Internal => ("internal", 500, "Internal error"),
            ErrorCode::WebhookSignatureInvalid => (
                "webhook-signature-invalid",
                401,
                "The webhook signature is missing or does not verify",
            ),
            ErrorCode::WebhookReplayed => (
                "webhook-replayed",
                409,
                "This webhook delivery was already received",
            ),
        }
    }

    pub const fn slug(self) -> &'static str {
        self.row().0
    }

    pub const fn status(self) -> u16 {
        self.row().1
    }

    pub const fn title(self) -> &'static str {
        self.row().2
    }

    /// The problem `type` URI. A URN: stable, and not pretending to be a page we host.
    pub fn type_uri(self) -> String {
        format!("urn:draven:problem:{}", self.slug())
    }
}

/// One offending field of a request, named by a JSON pointer-ish path (`/labels/0`) or a
/// parameter name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A domain error: a stable code, a message safe for clients, and optionally the offending field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Further problems of the same request (all missing dependencies of a release, say).
    pub errors: Vec<FieldError>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            field: None,
            errors: Vec::new(),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error {
            code: ErrorCode::ValidationFailed,
            message: message.into(),
            field: Some(field.to_owned()),
            errors: Vec::new(),
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Error {
        self.errors = errors;
        self
    }

    pub fn with_field(mut self, field: &str) -> Error {
        self.field = Some(field.to_owned());
        self
    }

    pub fn not_found(what: &str) -> Error {
        Error::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Conflict, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Forbidden, message)
    }

    /// An internal failure. The message given here goes to the log only; clients see a generic one.
    pub fn internal() -> Error {
        Error::new(
            ErrorCode::Internal,
            "internal error; see the server log for this request id",
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({}): {}", self.code.slug(), field, self.message),
            None => write!(f, "{}: {}", self.code.slug(), self.message),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_map_to_error_statuses() {
        let slugs: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.slug()).collect();
        assert_eq!(slugs.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.status()), "{code:?}");
            assert!(code.type_uri().starts_with("urn:draven:problem:"));
        }
    }
}
