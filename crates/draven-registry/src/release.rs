//! Releases: the dependency closure of a set of versions, and cycle detection over it.
//!
//! Pure: the caller supplies the versions and a way to find the published provider of an id.
//! A requirement is satisfied first by a member of the release, then by the newest published
//! version that provides it.

use std::collections::{BTreeMap, BTreeSet};

/// A version as the release logic sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub key: String,
    pub number: i64,
    pub provides: Vec<(String, String)>,
    /// (kind, id, from)
    pub requires: Vec<(String, String, String)>,
}

/// A resolved edge: `from` (key) needs (kind, id), provided by `to` (key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: String,
    pub element: String,
    pub kind: String,
    pub id: String,
    pub to: String,
}

/// A requirement nothing satisfies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Missing {
    pub from: String,
    pub number: i64,
    pub element: String,
    pub kind: String,
    pub id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub edges: Vec<Edge>,
    pub missing: Vec<Missing>,
}

fn provider<'a>(members: &'a BTreeMap<String, Node>, kind: &str, id: &str) -> Option<&'a Node> {
    members
        .values()
        .find(|n| n.provides.iter().any(|(k, i)| k == kind && i == id))
}

/// Resolves every requirement of `members` against the members themselves. Call after the
/// closure is complete.
pub fn resolve(members: &BTreeMap<String, Node>) -> Resolution {
    let mut r = Resolution::default();
    for n in members.values() {
        for (kind, id, from) in &n.requires {
            match provider(members, kind, id) {
                Some(p) => r.edges.push(Edge {
                    from: n.key.clone(),
                    element: from.clone(),
                    kind: kind.clone(),
                    id: id.clone(),
                    to: p.key.clone(),
                }),
                None => r.missing.push(Missing {
                    from: n.key.clone(),
                    number: n.number,
                    element: from.clone(),
                    kind: kind.clone(),
                    id: id.clone(),
                }),
            }
        }
    }
    r.edges.sort();
    r.missing.sort();
    r
}

/// Requirements of `members` that no member satisfies yet: what the caller should look up.
pub fn unsatisfied(members: &BTreeMap<String, Node>) -> BTreeSet<(String, String)> {
    members
        .values()
        .flat_map(|n| n.requires.iter())
        .filter(|(k, i, _)| provider(members, k, i).is_none())
        .map(|(k, i, _)| (k.clone(), i.clone()))
        .collect()
}

/// Every elementary cycle's node list found by depth-first search (each cycle reported once,
/// starting at its smallest key). Self-edges count.
pub fn cycles(edges: &[Edge]) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph
            .entry(e.from.as_str())
            .or_default()
            .insert(e.to.as_str());
    }
    let mut found = BTreeSet::new();
    for &start in graph.keys() {
        // Paths from `start` through keys > start back to start: each cycle once, from its min.
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
        let mut steps = 0usize;
        while let Some((node, path)) = stack.pop() {
            steps += 1;
            if steps > 100_000 {
                break;
            }
            for &next in graph.get(node).into_iter().flatten() {
                if next == start {
                    found.insert(path.iter().map(|s| s.to_string()).collect::<Vec<_>>());
                } else if next > start && !path.contains(&next) {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((next, p));
                }
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(key: &str, provides: &[(&str, &str)], requires: &[(&str, &str)]) -> Node {
        Node {
            key: key.into(),
            number: 1,
            provides: provides
                .iter()
                .map(|(k, i)| (k.to_string(), i.to_string()))
                .collect(),
            requires: requires
                .iter()
                .map(|(k, i)| (k.to_string(), i.to_string(), "Task_1".to_string()))
                .collect(),
        }
    }

    fn set(nodes: Vec<Node>) -> BTreeMap<String, Node> {
        nodes.into_iter().map(|n| (n.key.clone(), n)).collect()
    }

    #[test]
    fn resolution_and_missing() {
        let m = set(vec![
            node(
                "loan",
                &[("process", "Loan")],
                &[("decision", "risk"), ("form", "apply")],
            ),
            node("risk", &[("decision", "risk")], &[]),
        ]);
        let r = resolve(&m);
        assert_eq!(r.edges.len(), 1);
        assert_eq!(r.edges[0].to, "risk");
        assert_eq!(
            r.missing,
            vec![Missing {
                from: "loan".into(),
                number: 1,
                element: "Task_1".into(),
                kind: "form".into(),
                id: "apply".into()
            }]
        );
        assert_eq!(
            unsatisfied(&m).into_iter().collect::<Vec<_>>(),
            vec![("form".to_string(), "apply".to_string())]
        );
    }

    #[test]
    fn cycles_are_found_once() {
        let m = set(vec![
            node("a", &[("process", "A")], &[("process", "B")]),
            node("b", &[("process", "B")], &[("process", "C")]),
            node("c", &[("process", "C")], &[("process", "A")]),
            node("d", &[("process", "D")], &[("process", "D")]),
            node("e", &[("process", "E")], &[("process", "A")]),
        ]);
        let r = resolve(&m);
        let c = cycles(&r.edges);
        assert_eq!(
            c,
            vec![
                vec!["a".to_string(), "b".into(), "c".into()],
                vec!["d".to_string()]
            ]
        );
        let acyclic = set(vec![
            node("x", &[("process", "X")], &[("process", "Y")]),
            node("y", &[("process", "Y")], &[]),
        ]);
        assert!(cycles(&resolve(&acyclic).edges).is_empty());
    }
}
