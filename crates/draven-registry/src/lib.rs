//! The registry's domain logic: what an artifact is, how its payload is validated, which
//! dependencies it declares by content, and how a release becomes a deterministic bundle.
//!
//! Pure functions over bytes: no database, no object storage, no HTTP. The store persists what
//! this crate decides; the API exposes it.

pub mod bundle;
pub mod release;
pub mod service;
pub mod validate;

pub use service::Registry;
