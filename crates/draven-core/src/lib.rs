//! Draven's domain kernel: the vocabulary every other crate speaks.
//!
//! It owns names (validated newtypes), roles and the permission decision, and the domain error
//! type with its stable codes. It must never do I/O, spawn tasks or know about HTTP or SQL:
//! everything here is a pure function of its inputs, so it can be tested exhaustively.

pub mod access;
pub mod approval;
pub mod error;
pub mod job;
pub mod names;
pub mod trace;

pub use access::{Action, Decision, Grant, Principal, Role, RouteRule, Target, TokenScope};
pub use error::{Error, ErrorCode, FieldError};
pub use names::Slug;
pub use trace::TraceContext;
