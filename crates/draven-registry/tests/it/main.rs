//! The registry's integration tests, one binary: validators over the shared real-world corpus,
//! a table of hand-written cases per rule code, dependency extraction, and property tests.

mod cases;
mod corpus;
mod extraction;
mod hostile;
mod props;
