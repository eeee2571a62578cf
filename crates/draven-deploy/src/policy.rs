//! Environment policies (SPEC D2): which refs may be deployed, whether tags must be signed,
//! how many approvers a deploy needs, and when the environment is frozen.
//!
//! [`Policy::check`] is the one decision; a refusal names the rule that refused (stable code)
//! and why, so a job refused by policy can say which rule refused it. Freeze windows are cron
//! expressions (5 fields, UTC) that start a window of `duration_minutes`.

use chrono::{DateTime, Duration, Utc};
use croner::Cron;
use draven_core::Error;
use std::str::FromStr;

/// A git ref to deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitRef {
    Branch(String),
    Tag(String),
}

impl GitRef {
    /// `refs/heads/x` and `refs/tags/x` say what they are; a bare name is taken as `kind`.
    pub fn parse(name: &str, default_kind_tag: bool) -> Result<GitRef, Error> {
        let (tag, short) = if let Some(t) = name.strip_prefix("refs/tags/") {
            (true, t)
        } else if let Some(b) = name.strip_prefix("refs/heads/") {
            (false, b)
        } else {
            (default_kind_tag, name)
        };
        let bad = short.is_empty()
            || short.len() > 255
            || short.starts_with('-')
            || short.contains("..")
            || short
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
        if bad {
            return Err(Error::invalid(
                "ref",
                format!("{name:?} is not a valid git ref name"),
            ));
        }
        Ok(if tag {
            GitRef::Tag(short.to_owned())
        } else {
            GitRef::Branch(short.to_owned())
        })
    }

    pub fn name(&self) -> &str {
        match self {
            GitRef::Branch(n) | GitRef::Tag(n) => n,
        }
    }

    pub fn full_name(&self) -> String {
        match self {
            GitRef::Branch(n) => format!("refs/heads/{n}"),
            GitRef::Tag(n) => format!("refs/tags/{n}"),
        }
    }
}

/// A recurring window during which deploys are refused (an admin may override, audited).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    /// 5-field cron in UTC: when a window starts, e.g. `0 18 * * FRI`.
    pub cron: String,
    pub duration_minutes: u32,
    #[serde(default)]
    pub reason: String,
}

/// An environment's policy. The default allows any branch or tag, no approvals, no freeze.
/// Stored as JSON (this struct's serde form) in `project_environments.policy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Glob patterns (`main`, `release/*`); empty: any branch.
    pub allowed_branches: Vec<String>,
    pub tags_only: bool,
    /// Glob pattern tags must match (`v*`); none: any tag.
    pub tag_pattern: Option<String>,
    /// Tags must carry a signature `git verify-tag` accepts against the allowed signers.
    pub signed_tags_only: bool,
    /// Distinct approvers other than the requester.
    pub required_approvals: u32,
    pub freeze_windows: Vec<FreezeWindow>,
    /// How long a job may run before the runner stops it (0: the default, 30 minutes).
    pub timeout_secs: u32,
}

/// Why a policy refused a deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Stable code: `policy-branch-not-allowed`, `policy-tags-only`, `policy-tag-pattern`,
    /// `policy-tag-not-signed`, `policy-freeze-window`.
    pub rule: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    pub required_approvals: u32,
    /// A freeze window was active and overridden.
    pub freeze_overridden: bool,
}

/// What the check needs besides the policy.
#[derive(Clone, Debug)]
pub struct CheckInput<'a> {
    pub git_ref: &'a GitRef,
    pub now: DateTime<Utc>,
    /// `Some(true)` when the tag's signature was verified, `Some(false)` when verification
    /// failed, `None` when not verified (branches, or not checked).
    pub tag_signature_verified: Option<bool>,
    /// An administrator overrides an active freeze window.
    pub override_freeze: bool,
}

fn pattern(field: &str, p: &str) -> Result<glob::Pattern, Error> {
    glob::Pattern::new(p)
        .map_err(|e| Error::invalid(field, format!("{p:?} is not a valid pattern: {e}")))
}

fn cron(field: &str, c: &str) -> Result<Cron, Error> {
    if c.split_whitespace().count() != 5 {
        return Err(Error::invalid(
            field,
            format!("{c:?}: use 5 cron fields (minute hour day-of-month month day-of-week), UTC"),
        ));
    }
    Cron::from_str(c)
        .map_err(|e| Error::invalid(field, format!("{c:?} is not a valid cron expression: {e}")))
}

impl Policy {
    /// Checks the policy's own fields; errors name the field (`allowed_branches/1`).
    pub fn validate(&self) -> Result<(), Error> {
        for (i, b) in self.allowed_branches.iter().enumerate() {
            pattern(&format!("allowed_branches/{i}"), b)?;
        }
        if let Some(t) = &self.tag_pattern {
            pattern("tag_pattern", t)?;
        }
        if self.timeout_secs > 24 * 3600 {
            return Err(Error::invalid(
                "timeout_secs",
                "a job may run at most 24 hours",
            ));
        }
        if self.required_approvals > 10 {
            return Err(Error::invalid(
                "required_approvals",
                "at most 10 approvals can be required",
            ));
        }
        for (i, w) in self.freeze_windows.iter().enumerate() {
            cron(&format!("freeze_windows/{i}/cron"), &w.cron)?;
            if w.duration_minutes == 0 || w.duration_minutes > 60 * 24 * 31 {
                return Err(Error::invalid(
                    &format!("freeze_windows/{i}/duration_minutes"),
                    "duration must be 1 minute to 31 days",
                ));
            }
        }
        Ok(())
    }

    /// The freeze window in force at `now`, with the time it ends.
    pub fn active_freeze(&self, now: DateTime<Utc>) -> Option<(&FreezeWindow, DateTime<Utc>)> {
        self.freeze_windows.iter().find_map(|w| {
            let c = Cron::from_str(&w.cron).ok()?;
            let start = c.find_previous_occurrence(&now, true).ok()?;
            let end = start + Duration::minutes(i64::from(w.duration_minutes));
            (now < end).then_some((w, end))
        })
    }

    /// Decides whether `input.git_ref` may be deployed now, and with how many approvals.
    pub fn check(&self, input: &CheckInput<'_>) -> Result<PolicyDecision, Refusal> {
        match input.git_ref {
            GitRef::Branch(b) => {
                if self.tags_only {
                    return Err(Refusal {
                        rule: "policy-tags-only",
                        message: format!("only tags may be deployed here; {b:?} is a branch"),
                    });
                }
                let allowed = self.allowed_branches.is_empty()
                    || self
                        .allowed_branches
                        .iter()
                        .any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches(b)));
                if !allowed {
                    return Err(Refusal {
                        rule: "policy-branch-not-allowed",
                        message: format!(
                            "branch {b:?} is not one of the allowed branches {:?}",
                            self.allowed_branches
                        ),
                    });
                }
            }
            GitRef::Tag(t) => {
                if let Some(p) = &self.tag_pattern {
                    if !glob::Pattern::new(p).is_ok_and(|p| p.matches(t)) {
                        return Err(Refusal {
                            rule: "policy-tag-pattern",
                            message: format!("tag {t:?} does not match {p:?}"),
                        });
                    }
                }
                if self.signed_tags_only && input.tag_signature_verified != Some(true) {
                    let why = match input.tag_signature_verified {
                        Some(false) => "its signature did not verify against the allowed signers",
                        _ => "it carries no verified signature",
                    };
                    return Err(Refusal {
                        rule: "policy-tag-not-signed",
                        message: format!("tag {t:?} is refused: {why}"),
                    });
                }
            }
        }
        let mut freeze_overridden = false;
        if let Some((w, end)) = self.active_freeze(input.now) {
            if !input.override_freeze {
                let reason = if w.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", w.reason)
                };
                return Err(Refusal {
                    rule: "policy-freeze-window",
                    message: format!(
                        "the environment is frozen until {}{reason}",
                        end.to_rfc3339()
                    ),
                });
            }
            freeze_overridden = true;
        }
        Ok(PolicyDecision {
            required_approvals: self.required_approvals,
            freeze_overridden,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn check(
        p: &Policy,
        r: &GitRef,
        signed: Option<bool>,
        now: DateTime<Utc>,
    ) -> Result<u32, &'static str> {
        let input = CheckInput {
            git_ref: r,
            now,
            tag_signature_verified: signed,
            override_freeze: false,
        };
        p.check(&input)
            .map(|d| d.required_approvals)
            .map_err(|r| r.rule)
    }

    #[test]
    fn refs_parse() {
        assert_eq!(
            GitRef::parse("refs/tags/v1.2", false).unwrap(),
            GitRef::Tag("v1.2".into())
        );
        assert_eq!(
            GitRef::parse("refs/heads/develop", true).unwrap(),
            GitRef::Branch("develop".into())
        );
        assert_eq!(
            GitRef::parse("main", false).unwrap(),
            GitRef::Branch("main".into())
        );
        assert_eq!(
            GitRef::parse("v1", true).unwrap().full_name(),
            "refs/tags/v1"
        );
        for bad in ["", "a b", "a..b", "-x", "a:b", "x~1", "refs/heads/"] {
            assert_eq!(
                GitRef::parse(bad, false).unwrap_err().field.as_deref(),
                Some("ref"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_seed_examples() {
        let now = at(2026, 11, 24, 10, 0);
        // demo: deploys from develop, no approval.
        let demo = Policy {
            allowed_branches: vec!["develop".into()],
            ..Policy::default()
        };
        assert_eq!(
            check(&demo, &GitRef::Branch("develop".into()), None, now),
            Ok(0)
        );
        assert_eq!(
            check(&demo, &GitRef::Branch("feature/x".into()), None, now),
            Err("policy-branch-not-allowed")
        );
        // prod: tags v* only, signed, two approvers.
        let prod = Policy {
            tags_only: true,
            tag_pattern: Some("v*".into()),
            signed_tags_only: true,
            required_approvals: 2,
            ..Policy::default()
        };
        assert_eq!(
            check(&prod, &GitRef::Branch("main".into()), None, now),
            Err("policy-tags-only")
        );
        assert_eq!(
            check(&prod, &GitRef::Tag("release-1".into()), Some(true), now),
            Err("policy-tag-pattern")
        );
        assert_eq!(
            check(&prod, &GitRef::Tag("v1.0.0".into()), None, now),
            Err("policy-tag-not-signed")
        );
        assert_eq!(
            check(&prod, &GitRef::Tag("v1.0.0".into()), Some(false), now),
            Err("policy-tag-not-signed")
        );
        assert_eq!(
            check(&prod, &GitRef::Tag("v1.0.0".into()), Some(true), now),
            Ok(2)
        );
        let branches = Policy {
            allowed_branches: vec!["main".into(), "release/*".into()],
            ..Policy::default()
        };
        assert_eq!(
            check(
                &branches,
                &GitRef::Branch("release/2026.11".into()),
                None,
                now
            ),
            Ok(0)
        );
        assert_eq!(
            check(&branches, &GitRef::Tag("anything".into()), None, now),
            Ok(0)
        );
    }

    #[test]
    fn freeze_windows() {
        // Friday 18:00 UTC to Monday 10:00 UTC.
        let p = Policy {
            freeze_windows: vec![FreezeWindow {
                cron: "0 18 * * FRI".into(),
                duration_minutes: 64 * 60,
                reason: "weekend".into(),
            }],
            ..Policy::default()
        };
        p.validate().unwrap();
        let main = GitRef::Branch("main".into());
        assert_eq!(
            check(&p, &main, None, at(2026, 11, 27, 17, 59)),
            Ok(0),
            "Friday before 18:00"
        );
        assert_eq!(
            check(&p, &main, None, at(2026, 11, 27, 18, 0)),
            Err("policy-freeze-window")
        );
        assert_eq!(
            check(&p, &main, None, at(2026, 11, 29, 12, 0)),
            Err("policy-freeze-window"),
            "Sunday"
        );
        assert_eq!(
            check(&p, &main, None, at(2026, 11, 30, 10, 0)),
            Ok(0),
            "Monday 10:00"
        );
        let (_, end) = p.active_freeze(at(2026, 11, 28, 0, 0)).unwrap();
        assert_eq!(end, at(2026, 11, 30, 10, 0));
        let input = CheckInput {
            git_ref: &main,
            now: at(2026, 11, 28, 0, 0),
            tag_signature_verified: None,
            override_freeze: true,
        };
        assert!(p.check(&input).unwrap().freeze_overridden);
        let refusal = p
            .check(&CheckInput {
                override_freeze: false,
                ..input
            })
            .unwrap_err();
        assert!(
            refusal.message.contains("2026-11-30T10:00:00") && refusal.message.contains("weekend"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let field = |p: Policy| p.validate().unwrap_err().field;
        assert_eq!(
            field(Policy {
                allowed_branches: vec!["ok".into(), "[bad".into()],
                ..Policy::default()
            })
            .as_deref(),
            Some("allowed_branches/1")
        );
        assert_eq!(
            field(Policy {
                tag_pattern: Some("[".into()),
                ..Policy::default()
            })
            .as_deref(),
            Some("tag_pattern")
        );
        let w = |cron: &str, d: u32| Policy {
            freeze_windows: vec![FreezeWindow {
                cron: cron.into(),
                duration_minutes: d,
                reason: String::new(),
            }],
            ..Policy::default()
        };
        assert_eq!(
            field(w("0 18 * *", 60)).as_deref(),
            Some("freeze_windows/0/cron")
        );
        assert_eq!(
            field(w("0 25 * * *", 60)).as_deref(),
            Some("freeze_windows/0/cron")
        );
        assert_eq!(
            field(w("0 18 * * *", 0)).as_deref(),
            Some("freeze_windows/0/duration_minutes")
        );
        assert_eq!(
            field(Policy {
                required_approvals: 11,
                ..Policy::default()
            })
            .as_deref(),
            Some("required_approvals")
        );
    }
}
