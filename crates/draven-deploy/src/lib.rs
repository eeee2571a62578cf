//! The deploy domain's rules: the deploy job state machine and environment policies.
//!
//! Pure decisions, no I/O: which transitions a job may make, and whether a ref may be deployed
//! to an environment right now (allowed branches, tags only, tag pattern, signed tags, freeze
//! windows) and how many approvals it needs. The store records jobs and locks; providers,
//! runner and API are built on these.

pub mod job;
pub mod policy;

pub use job::{JobEvent, JobState};
pub use policy::{FreezeWindow, GitRef, Policy, PolicyDecision, Refusal};
