//! Which node serves a TLS connection, from its ClientHello: the server name (SNI) and the ALPN
//! protocols, with the same kinds of policy as the HTTP path ([`crate::policy`]).
//!
//! In this order, the first that applies names the owner:
//! 1. `local` policy: this node, always.
//! 2. A name rule for exactly the SNI (`www.example.com`).
//! 3. The longest wildcard rule whose suffix the SNI ends with: `*.example.com` matches
//!    `a.example.com` and `a.b.example.com` (any depth, as nginx's `server_name`), not
//!    `example.com`. This is the name map's "longest prefix", read from the right.
//! 4. An ALPN rule for a protocol the client offers (the rules' order decides, e.g. `h2=n3`).
//! 5. `hash` policy: the weighted rendezvous hash of the SNI over the nodes, the same function
//!    as for HTTP paths, so every node computes the same owner.
//! 6. The default node (`default_node`), or this node.

use crate::policy::{Decision, WeightedNode, rendezvous};

/// The kind of TLS routing policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Every connection is relayed to this node's TLS upstream.
    Local,
    /// Name and ALPN rules, then the default.
    Names,
    /// Name and ALPN rules, then the weighted rendezvous hash of the SNI over these nodes.
    Hash(Vec<WeightedNode>),
}

/// A server-name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    /// Exactly this name (lower case).
    Exact(String),
    /// `*.suffix`: any name ending in `.suffix`; holds `.suffix`.
    Wildcard(String),
}

impl NamePattern {
    /// Parses `www.example.com` or `*.example.com` (lower-cased; a trailing dot is dropped).
    pub fn parse(s: &str) -> Result<NamePattern, String> {
        let s = s.trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s.as_str()),
        };
        let ok = !name.is_empty()
            && name.len() <= super::hello::MAX_NAME
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            return Err(format!(
                "server name {s:?} is not a host name or *.suffix (e.g. www.example.com, *.example.com)"
            ));
        }
        Ok(if wild {
            NamePattern::Wildcard(format!(".{name}"))
        } else {
            NamePattern::Exact(name.to_string())
        })
    }

    /// Whether `name` (lower case, as the hello reader gives it) matches: the same rule as the
    /// routing table's (a wildcard matches any depth, not the bare suffix).
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Wildcard(suffix) => under(suffix, name),
        }
    }
}

/// `name` lies under `suffix` (`.example.com`): at any depth, not the bare suffix.
fn under(suffix: &str, name: &str) -> bool {
    name.len() > suffix.len() && name.ends_with(suffix)
}

/// The TLS routing table of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRoutes {
    self_id: String,
    policy: TlsPolicy,
    exact: Vec<(String, String)>,
    /// Longest suffix first.
    wildcards: Vec<(String, String)>,
    alpn: Vec<(String, String)>,
    default: Option<String>,
}

impl TlsRoutes {
    /// A routing table for node `self_id`; `names` and `alpn` map to node ids.
    pub fn new(
        self_id: impl Into<String>,
        policy: TlsPolicy,
        names: Vec<(NamePattern, String)>,
        alpn: Vec<(String, String)>,
        default: Option<String>,
    ) -> Self {
        let mut exact = Vec::new();
        let mut wildcards = Vec::new();
        for (p, node) in names {
            match p {
                NamePattern::Exact(n) => exact.push((n, node)),
                NamePattern::Wildcard(s) => wildcards.push((s, node)),
            }
        }
        exact.sort();
        wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        TlsRoutes {
            self_id: self_id.into(),
            policy,
            exact,
            wildcards,
            alpn,
            default,
        }
    }

    /// This node's id.
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// The policy.
    pub fn policy(&self) -> &TlsPolicy {
        &self.policy
    }

    /// The node that serves a hello with `sni` and `alpn` (module docs for the order).
    pub fn owner<'a>(&'a self, sni: Option<&str>, alpn: &[String]) -> &'a str {
        if self.policy == TlsPolicy::Local {
            return &self.self_id;
        }
        if let Some(name) = sni {
            if let Ok(i) = self.exact.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                return &self.exact[i].1;
            }
            if let Some((_, node)) = self
                .wildcards
                .iter()
                .find(|(suffix, _)| under(suffix, name))
            {
                return node;
            }
        }
        if let Some((_, node)) = self.alpn.iter().find(|(p, _)| alpn.contains(p)) {
            return node;
        }
        if let (TlsPolicy::Hash(nodes), Some(name)) = (&self.policy, sni)
            && let Some(owner) = rendezvous(nodes, name)
        {
            return owner;
        }
        self.default_owner()
    }

    /// The node for connections without a usable hello when they are sent to the default.
    pub fn default_owner(&self) -> &str {
        self.default.as_deref().unwrap_or(&self.self_id)
    }

    /// Local, or the peer to hand off to.
    pub fn decide<'a>(&'a self, sni: Option<&str>, alpn: &[String]) -> Decision<'a> {
        self.as_decision(self.owner(sni, alpn))
    }

    /// Local, or the peer, for `owner`.
    pub fn as_decision<'a>(&'a self, owner: &'a str) -> Decision<'a> {
        if owner == self.self_id {
            Decision::Local
        } else {
            Decision::Peer(owner)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(policy: TlsPolicy) -> TlsRoutes {
        let names = [
            ("www.example.com", "n2"),
            ("*.example.com", "n3"),
            ("*.img.example.com", "n1"),
            ("api.img.example.com", "n2"),
        ]
        .iter()
        .map(|(p, n)| (NamePattern::parse(p).unwrap(), n.to_string()))
        .collect();
        TlsRoutes::new(
            "n1",
            policy,
            names,
            vec![("h2".into(), "n2".into())],
            Some("n3".into()),
        )
    }

    #[test]
    fn exact_then_longest_wildcard_then_alpn_then_default() {
        let r = routes(TlsPolicy::Names);
        let none: &[String] = &[];
        let h2 = ["http/1.1".to_string(), "h2".to_string()];
        assert_eq!(r.owner(Some("www.example.com"), none), "n2");
        assert_eq!(r.owner(Some("a.example.com"), none), "n3");
        assert_eq!(r.owner(Some("a.b.example.com"), none), "n3");
        assert_eq!(r.owner(Some("x.img.example.com"), none), "n1");
        assert_eq!(r.owner(Some("api.img.example.com"), none), "n2");
        // The bare suffix is not matched by its wildcard.
        assert_eq!(r.owner(Some("example.com"), none), "n3");
        assert_eq!(r.owner(Some("example.com"), &h2), "n2");
        assert_eq!(r.owner(Some("www.example.com"), &h2), "n2");
        assert_eq!(r.owner(None, none), "n3");
        assert_eq!(r.owner(Some("other.test"), none), "n3");
        assert_eq!(r.decide(Some("x.img.example.com"), none), Decision::Local);
        assert_eq!(r.decide(Some("a.example.com"), none), Decision::Peer("n3"));
    }

    #[test]
    fn hash_spreads_unmatched_names_like_the_http_hash() {
        let nodes: Vec<WeightedNode> = ["n1", "n2", "n3"]
            .iter()
            .map(|id| WeightedNode {
                id: id.to_string(),
                weight: 1,
            })
            .collect();
        let r = routes(TlsPolicy::Hash(nodes.clone()));
        assert_eq!(r.owner(Some("www.example.com"), &[]), "n2");
        for i in 0..100 {
            let name = format!("site{i}.test");
            assert_eq!(
                r.owner(Some(&name), &[]),
                rendezvous(&nodes, &name).unwrap()
            );
        }
        // Without a name there is nothing to hash: the default.
        assert_eq!(r.owner(None, &[]), "n3");
    }

    #[test]
    fn local_policy_and_patterns() {
        let r = routes(TlsPolicy::Local);
        assert_eq!(r.owner(Some("www.example.com"), &[]), "n1");
        assert_eq!(
            NamePattern::parse("*.Example.COM."),
            Ok(NamePattern::Wildcard(".example.com".into()))
        );
        assert!(NamePattern::parse("*.").is_err());
        assert!(NamePattern::parse("a b").is_err());
        assert!(NamePattern::parse("*").is_err());
        assert!(NamePattern::parse("a.*.com").is_err());
    }
}
