//! Dispatch policy: which node should serve a request path.
//!
//! - [`Policy::Local`]: every request is served here (no hand-off).
//! - [`Policy::Prefix`]: the longest matching path prefix names the node; unmatched paths go to
//!   a default node (this one when none is set).
//! - [`Policy::Hash`]: weighted rendezvous hashing (highest random weight, Thaler and Ravishankar
//!   1998, with the weighted score `w / -ln(u)` of Schindelhauer and Schomaker) of the path over
//!   the nodes, as content-aware request distribution does: every node computes the same owner
//!   for a path without coordination; a node's share is proportional to its weight; removing a
//!   node moves only the paths it owned.
//!
//! The hash is FNV-1a plus the SplitMix64 finalizer, fixed, so every node of the cluster agrees.

use crate::content::{fnv1a, mix64};

/// A node that takes part in the hash policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedNode {
    /// The node's id.
    pub id: String,
    /// Relative weight; 0 takes the node out of the hash (drained).
    pub weight: u32,
}

/// How paths are mapped to nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// Serve everything locally.
    Local,
    /// Longest prefix match over `(prefix, node id)` rules.
    Prefix {
        /// The rules, in any order.
        rules: Vec<(String, String)>,
        /// The node for paths no rule matches (`None`: this node).
        default: Option<String>,
    },
    /// Weighted rendezvous hash of the path over `nodes` (this node included).
    Hash {
        /// The nodes and weights.
        nodes: Vec<WeightedNode>,
    },
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Serve it on this node.
    Local,
    /// Hand the connection off to this peer.
    Peer(&'a str),
}

/// A policy bound to this node's identity.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    self_id: String,
    policy: Policy,
}

impl Dispatcher {
    /// A dispatcher for node `self_id`. Prefix rules are sorted longest first here.
    pub fn new(self_id: impl Into<String>, mut policy: Policy) -> Self {
        if let Policy::Prefix { rules, .. } = &mut policy {
            rules.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        Dispatcher {
            self_id: self_id.into(),
            policy,
        }
    }

    /// This node's id.
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The node that should serve `path` (this node's id for local).
    pub fn owner<'a>(&'a self, path: &str) -> &'a str {
        match &self.policy {
            Policy::Local => &self.self_id,
            Policy::Prefix { rules, default } => rules
                .iter()
                .find(|(p, _)| path.starts_with(p.as_str()))
                .map(|(_, n)| n.as_str())
                .or(default.as_deref())
                .unwrap_or(&self.self_id),
            Policy::Hash { nodes } => rendezvous(nodes, path).unwrap_or(&self.self_id),
        }
    }

    /// Local or the peer to hand off to.
    pub fn decide<'a>(&'a self, path: &str) -> Decision<'a> {
        let o = self.owner(path);
        if o == self.self_id {
            Decision::Local
        } else {
            Decision::Peer(o)
        }
    }
}

/// A uniform number in (0, 1) from the node and the key.
fn unit(node: &str, key_hash: u64) -> f64 {
    let h = mix64(fnv1a(node.as_bytes()) ^ key_hash);
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// The node with the highest weighted score for `key`; `None` when all weights are 0.
pub fn rendezvous<'a>(nodes: &'a [WeightedNode], key: &str) -> Option<&'a str> {
    let kh = mix64(fnv1a(key.as_bytes()));
    let mut best: Option<(f64, &str)> = None;
    for n in nodes.iter().filter(|n| n.weight > 0) {
        let score = f64::from(n.weight) / -unit(&n.id, kh).ln();
        let better = match best {
            None => true,
            Some((s, id)) => score > s || (score == s && n.id.as_str() < id),
        };
        if better {
            best = Some((score, n.id.as_str()));
        }
    }
    best.map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn nodes(ws: &[(&str, u32)]) -> Vec<WeightedNode> {
        ws.iter()
            .map(|(id, w)| WeightedNode {
                id: id.to_string(),
                weight: *w,
            })
            .collect()
    }

    fn paths(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("/obj/{i}")).collect()
    }

    #[test]
    fn prefix_longest_match_wins_and_default_applies() {
        let d = Dispatcher::new(
            "n1",
            Policy::Prefix {
                rules: vec![
                    ("/a/".into(), "n2".into()),
                    ("/a/b/".into(), "n3".into()),
                    ("/c".into(), "n1".into()),
                ],
                default: None,
            },
        );
        assert_eq!(d.decide("/a/x"), Decision::Peer("n2"));
        assert_eq!(d.decide("/a/b/x"), Decision::Peer("n3"));
        assert_eq!(d.decide("/c/d"), Decision::Local);
        assert_eq!(d.decide("/zzz"), Decision::Local);
        assert_eq!(d.decide("/a"), Decision::Local);
        let d2 = Dispatcher::new(
            "n1",
            Policy::Prefix {
                rules: vec![("/a/".into(), "n1".into())],
                default: Some("n3".into()),
            },
        );
        assert_eq!(d2.decide("/a/1"), Decision::Local);
        assert_eq!(d2.decide("/b"), Decision::Peer("n3"));
    }

    #[test]
    fn local_policy_never_hands_off() {
        let d = Dispatcher::new("n1", Policy::Local);
        assert_eq!(d.decide("/anything"), Decision::Local);
    }

    #[test]
    fn hash_is_consistent_across_nodes_and_calls() {
        let ns = nodes(&[("n1", 1), ("n2", 1), ("n3", 1)]);
        let a = Dispatcher::new("n1", Policy::Hash { nodes: ns.clone() });
        let mut rev = ns.clone();
        rev.reverse();
        let b = Dispatcher::new("n2", Policy::Hash { nodes: rev });
        for p in paths(2000) {
            assert_eq!(a.owner(&p), b.owner(&p), "{p}");
            assert_eq!(a.owner(&p), a.owner(&p));
        }
    }

    #[test]
    fn hash_golden_owners() {
        // Pinned so that a change to the hash (which would remap every cluster) shows in review.
        let ns = nodes(&[("n1", 1), ("n2", 1), ("n3", 1)]);
        let got: Vec<&str> = ["/obj/0", "/obj/1", "/obj/2", "/obj/3", "/index.html"]
            .iter()
            .map(|p| rendezvous(&ns, p).unwrap())
            .collect();
        assert_eq!(got, ["n1", "n1", "n2", "n3", "n2"]);
    }

    #[test]
    fn hash_shares_follow_weights() {
        let ns = nodes(&[("n1", 1), ("n2", 2), ("n3", 1)]);
        let mut count: HashMap<&str, usize> = HashMap::new();
        let ps = paths(40_000);
        for p in &ps {
            *count.entry(rendezvous(&ns, p).unwrap()).or_default() += 1;
        }
        let share = |id| count[id] as f64 / ps.len() as f64;
        assert!((share("n1") - 0.25).abs() < 0.02, "{count:?}");
        assert!((share("n2") - 0.50).abs() < 0.02, "{count:?}");
        assert!((share("n3") - 0.25).abs() < 0.02, "{count:?}");
    }

    #[test]
    fn removing_a_node_moves_only_its_share() {
        let all = nodes(&[("n1", 1), ("n2", 3), ("n3", 1), ("n4", 2)]);
        let without: Vec<_> = all.iter().filter(|n| n.id != "n2").cloned().collect();
        let drained = nodes(&[("n1", 1), ("n2", 0), ("n3", 1), ("n4", 2)]);
        let mut moved = 0;
        for p in paths(20_000) {
            let before = rendezvous(&all, &p).unwrap();
            let after = rendezvous(&without, &p).unwrap();
            assert_eq!(after, rendezvous(&drained, &p).unwrap());
            if before != "n2" {
                assert_eq!(before, after, "{p} moved although its owner stayed");
            } else {
                moved += 1;
            }
        }
        // n2 held 3/7 of the paths.
        assert!(
            (moved as f64 / 20_000.0 - 3.0 / 7.0).abs() < 0.02,
            "{moved}"
        );
    }

    #[test]
    fn all_weights_zero_falls_back_to_local() {
        let d = Dispatcher::new(
            "n1",
            Policy::Hash {
                nodes: nodes(&[("n2", 0)]),
            },
        );
        assert_eq!(d.decide("/x"), Decision::Local);
    }
}
