//! The two-person rule, shared by registry publications and deploys: who may vote on an
//! approval request, and what the votes add up to.
//!
//! One function decides a vote; the store records it. The requester never counts, each person
//! votes once, one rejection ends the request, and `required` distinct approvals approve it.

use crate::error::{Error, ErrorCode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
        }
    }

    pub fn parse(s: &str) -> Result<Verdict, Error> {
        match s {
            "approve" => Ok(Verdict::Approve),
            "reject" => Ok(Verdict::Reject),
            _ => Err(Error::invalid(
                "verdict",
                "verdict must be approve or reject",
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    /// The subject went away (e.g. a cancelled deploy); no more votes.
    Withdrawn,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalState> {
        [
            ApprovalState::Pending,
            ApprovalState::Approved,
            ApprovalState::Rejected,
            ApprovalState::Withdrawn,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// A vote already cast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CastVote {
    pub user_id: String,
    pub verdict: Verdict,
}

/// Decides `voter`'s `verdict` on a request: the state after the vote, or why it is refused.
pub fn decide_vote(
    state: ApprovalState,
    requester: &str,
    required: u32,
    cast: &[CastVote],
    voter: &str,
    verdict: Verdict,
) -> Result<ApprovalState, Error> {
    if state != ApprovalState::Pending {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("this request is already {}", state.as_str()),
        ));
    }
    if voter == requester {
        return Err(Error::forbidden(
            "the requester cannot vote on their own request (two-person rule)",
        ));
    }
    if cast.iter().any(|v| v.user_id == voter) {
        return Err(Error::conflict(
            "you have already voted on this request; one vote per person",
        ));
    }
    if verdict == Verdict::Reject {
        return Ok(ApprovalState::Rejected);
    }
    let approvals = cast
        .iter()
        .filter(|v| v.verdict == Verdict::Approve && v.user_id != requester)
        .count()
        + 1;
    Ok(if approvals as u32 >= required.max(1) {
        ApprovalState::Approved
    } else {
        ApprovalState::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApprovalState::*;
    use Verdict::*;

    fn v(user: &str, verdict: Verdict) -> CastVote {
        CastVote {
            user_id: user.into(),
            verdict,
        }
    }

    /// (state, required, votes cast, voter, verdict) → outcome
    type Case = (
        ApprovalState,
        u32,
        Vec<CastVote>,
        &'static str,
        Verdict,
        Result<ApprovalState, ErrorCode>,
    );

    #[test]
    fn two_person_rule() {
        // (state, required, cast, voter, verdict) -> outcome
        let cases: Vec<Case> = vec![
            (Pending, 1, vec![], "bob", Approve, Ok(Approved)),
            (Pending, 2, vec![], "bob", Approve, Ok(Pending)),
            (
                Pending,
                2,
                vec![v("bob", Approve)],
                "cy",
                Approve,
                Ok(Approved),
            ),
            (
                Pending,
                2,
                vec![v("bob", Approve)],
                "bob",
                Approve,
                Err(ErrorCode::Conflict),
            ),
            (
                Pending,
                2,
                vec![],
                "ann",
                Approve,
                Err(ErrorCode::Forbidden),
            ),
            (Pending, 2, vec![], "ann", Reject, Err(ErrorCode::Forbidden)),
            (
                Pending,
                2,
                vec![v("bob", Approve)],
                "cy",
                Reject,
                Ok(Rejected),
            ),
            (Pending, 0, vec![], "bob", Approve, Ok(Approved)),
            (
                Approved,
                1,
                vec![v("bob", Approve)],
                "cy",
                Approve,
                Err(ErrorCode::Conflict),
            ),
            (Rejected, 1, vec![], "cy", Approve, Err(ErrorCode::Conflict)),
            (
                Withdrawn,
                1,
                vec![],
                "cy",
                Approve,
                Err(ErrorCode::Conflict),
            ),
            (
                Pending,
                3,
                vec![v("bob", Approve), v("cy", Approve)],
                "dee",
                Approve,
                Ok(Approved),
            ),
        ];
        for (state, required, cast, voter, verdict, expected) in cases {
            let got =
                decide_vote(state, "ann", required, &cast, voter, verdict).map_err(|e| e.code);
            assert_eq!(
                got, expected,
                "{state:?} required={required} {cast:?} {voter} {verdict:?}"
            );
        }
    }

    #[test]
    fn parsing() {
        assert_eq!(Verdict::parse("approve").unwrap(), Approve);
        assert_eq!(
            Verdict::parse("yes").unwrap_err().field.as_deref(),
            Some("verdict")
        );
        for s in [Pending, Approved, Rejected, Withdrawn] {
            assert_eq!(ApprovalState::parse(s.as_str()), Some(s));
        }
    }
}
