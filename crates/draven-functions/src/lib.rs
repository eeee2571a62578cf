//! Draven's functions (SPEC F1–F7, F9–F11): definitions, the invocation engine and executors.
//!
//! - [`spec`]: the definition document and its validation;
//! - [`engine`]: admission, bounded queues, the scheduler, retries, the dead-letter queue,
//!   callbacks, drain, metrics;
//! - [`invocation`]: invocation records and their bounded store (with idempotency keys);
//! - [`callback`]: signed `X-Callback-Url` deliveries behind an allow-list;
//! - [`executor`]: the [`executor::Executor`] trait and the local executor (warm pool and
//!   process per invocation).
//!
//! Architecture invariant: nothing here knows HTTP routing (no axum); the API crate turns
//! requests into [`engine::InvokeRequest`]s and results into responses.

pub mod callback;
pub mod engine;
pub mod executor;
pub mod invocation;
pub mod spec;
pub mod testing;

pub use engine::{Engine, EngineConfig};
