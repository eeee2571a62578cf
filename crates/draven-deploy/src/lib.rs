//! The deploy domain's rules: the deploy job state machine and environment policies.
//!
//! `job` and `policy` are pure decisions: which transitions a job may make, and whether a ref
//! may be deployed to an environment right now (allowed branches, tags only, tag pattern, signed
//! tags, freeze windows) and how many approvals it needs. `git` is the one part that touches the
//! outside world: it asks the repository (real `git`) which commit a ref names and whether a
//! tag's signature verifies. The store records jobs and locks; providers, runner and API are
//! built on these.

pub mod dispatch;
pub mod git;

#[cfg(any(test, feature = "testing"))]
pub mod fakes;
pub mod notify;
pub mod policy;
pub mod providers;
pub mod service;
pub mod testing;

pub use draven_core::job::{JobEvent, JobState};
pub use policy::{FreezeWindow, GitRef, Policy, PolicyDecision, Refusal};
