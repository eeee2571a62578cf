//! The deploy job state machine (SPEC D3): one enum, one function deciding every transition.
//!
//! ```text
//! PENDING ──policy ok, approvals needed──► AWAITING_APPROVAL ──approved──► QUEUED
//!    │ └───policy ok, no approval────────────────────────────────────────►   │
//!    └──policy refused──► REJECTED ◄──approval rejected── AWAITING_APPROVAL  │ lock acquired
//!                                                                            ▼
//!        SUCCEEDED / FAILED / TIMED_OUT ◄──finished / timed out── RUNNING
//! any non-terminal state ──cancel──► CANCELLED
//! ```

use crate::error::{Error, ErrorCode};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    AwaitingApproval,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Rejected,
}

/// What happens to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEvent {
    /// The policy allows the ref; `needs_approval` when the environment requires approvers.
    PolicyPassed {
        needs_approval: bool,
    },
    PolicyRefused,
    Approved,
    ApprovalRejected,
    /// The job holds the environment lock and its execution started.
    Started,
    Finished {
        success: bool,
    },
    TimedOut,
    Cancel,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Pending,
        JobState::AwaitingApproval,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
        JobState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::AwaitingApproval => "AWAITING_APPROVAL",
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::TimedOut => "TIMED_OUT",
            JobState::Rejected => "REJECTED",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::Cancelled
                | JobState::TimedOut
                | JobState::Rejected
        )
    }

    /// The state after `event`, or a conflict naming the refused transition.
    pub fn apply(self, event: JobEvent) -> Result<JobState, Error> {
        use JobEvent as E;
        use JobState as S;
        let next = match (self, event) {
            (
                S::Pending,
                E::PolicyPassed {
                    needs_approval: true,
                },
            ) => S::AwaitingApproval,
            (
                S::Pending,
                E::PolicyPassed {
                    needs_approval: false,
                },
            ) => S::Queued,
            (S::Pending, E::PolicyRefused) => S::Rejected,
            (S::AwaitingApproval, E::Approved) => S::Queued,
            (S::AwaitingApproval, E::ApprovalRejected) => S::Rejected,
            (S::Queued, E::Started) => S::Running,
            (S::Running, E::Finished { success: true }) => S::Succeeded,
            (S::Running, E::Finished { success: false }) => S::Failed,
            (S::Running, E::TimedOut) => S::TimedOut,
            (s, E::Cancel) if !s.is_terminal() => S::Cancelled,
            (s, e) => {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!("a {} job cannot take event {e:?}", s.as_str()),
                ));
            }
        };
        Ok(next)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobEvent as E;
    use JobState as S;

    const EVENTS: [JobEvent; 9] = [
        E::PolicyPassed {
            needs_approval: true,
        },
        E::PolicyPassed {
            needs_approval: false,
        },
        E::PolicyRefused,
        E::Approved,
        E::ApprovalRejected,
        E::Started,
        E::Finished { success: true },
        E::Finished { success: false },
        E::TimedOut,
    ];

    /// Every (state, event) pair: the table below is the whole machine.
    #[test]
    fn transitions_are_exhaustive() {
        let allowed: &[(JobState, JobEvent, JobState)] = &[
            (
                S::Pending,
                E::PolicyPassed {
                    needs_approval: true,
                },
                S::AwaitingApproval,
            ),
            (
                S::Pending,
                E::PolicyPassed {
                    needs_approval: false,
                },
                S::Queued,
            ),
            (S::Pending, E::PolicyRefused, S::Rejected),
            (S::AwaitingApproval, E::Approved, S::Queued),
            (S::AwaitingApproval, E::ApprovalRejected, S::Rejected),
            (S::Queued, E::Started, S::Running),
            (S::Running, E::Finished { success: true }, S::Succeeded),
            (S::Running, E::Finished { success: false }, S::Failed),
            (S::Running, E::TimedOut, S::TimedOut),
        ];
        for state in S::ALL {
            for event in EVENTS {
                let expected = allowed
                    .iter()
                    .find(|(s, e, _)| *s == state && *e == event)
                    .map(|(_, _, n)| *n);
                match expected {
                    Some(next) => {
                        assert_eq!(state.apply(event).unwrap(), next, "{state:?} {event:?}")
                    }
                    None => assert_eq!(
                        state.apply(event).unwrap_err().code,
                        ErrorCode::Conflict,
                        "{state:?} {event:?}"
                    ),
                }
            }
            let cancelled = state.apply(E::Cancel);
            assert_eq!(cancelled.is_ok(), !state.is_terminal(), "{state:?} cancel");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("DONE"), None);
    }
}
