//! Which shard owns a frame: the software steering of docs/architecture.md, "Using both cores".
//!
//! A pure function of the frame, its port and the switch configuration, so that every shard
//! names the same owner for every frame of a connection and of its splice.

use knits_core::config::{Config, PortId, PortRole};
use knits_core::spray::shard_of;
use knits_core::wire::control;

/// Which shard owns a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    /// This shard's core handles it.
    Shard(u32),
    /// A hand-off request, for this shard.
    Control(u32),
    /// ARP: shard 0 answers; the others learn from a copy.
    Arp,
}

/// The owner shard of `frame` received on `port` (docs/architecture.md, "Using both cores").
/// TCP: the client's endpoint for traffic of the VIP (the source on the client port, the
/// destination when a node sends to the client side), the endpoint with the higher port (the
/// initiator's ephemeral one; ties: the higher address) between nodes. A hand-off request: the
/// held connection's peer it names, which is that connection's key. ARP: [`Steer::Arp`].
/// Everything else: shard 0.
pub fn steer(cfg: &Config, port: PortId, frame: &[u8], shards: u32) -> Steer {
    let zero = Steer::Shard(0);
    if shards <= 1 || frame.len() < 14 {
        return zero;
    }
    match [frame[12], frame[13]] {
        [0x08, 0x06] => return Steer::Arp,
        [0x08, 0x00] => {}
        _ => return zero,
    }
    let ip = &frame[14..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return zero;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let Some(l4) = ip.get(ihl..).filter(|_| ihl >= 20) else {
        return zero;
    };
    // Fragments (the core drops them) carry no ports after the first.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || l4.len() < 4 {
        return zero;
    }
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let role = |p: Option<PortId>| p.and_then(|p| cfg.ports.get(p as usize)).map(|pc| pc.role);
    let from_client = role(Some(port)) == Some(PortRole::Client);
    match ip[9] {
        6 => {
            let (addr, p) = if from_client {
                (src, sport)
            } else if role(cfg.route(dst.into())) == Some(PortRole::Client) {
                (dst, dport)
            } else if (sport, src) > (dport, dst) {
                (src, sport)
            } else {
                (dst, dport)
            };
            Steer::Shard(shard_of(addr, p, shards))
        }
        17 if !from_client && dport == cfg.control_port => {
            match l4.get(8..).map(control::Request::new_checked) {
                Some(Ok(r)) => {
                    let e = r.held_peer();
                    Steer::Control(shard_of(e.addr, e.port, shards))
                }
                _ => zero,
            }
        }
        _ => zero,
    }
}

/// True when shard `id` handles a frame steered `st` as a copy: every ARP frame goes to shard 0,
/// which answers, captures and counts it, and a copy to every other shard, which only learns
/// from it. So a malformed ARP frame is one drop, not one per shard.
pub(crate) fn is_arp_copy(id: usize, st: Steer) -> bool {
    id != 0 && st == Steer::Arp
}

/// Turns an ARP request into a reply in place, so a shard that gets a copy learns the sender
/// without answering (shard 0 answers).
pub(crate) fn arp_as_reply(frame: &mut [u8]) {
    if let Some(op) = frame.get_mut(20..22) {
        op.copy_from_slice(&[0, 2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4 frame with `proto` and the first bytes of its payload.
    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f.extend_from_slice(l4);
        f
    }

    fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
        let mut l4 = vec![0u8; 20];
        l4[..2].copy_from_slice(&src.1.to_be_bytes());
        l4[2..4].copy_from_slice(&dst.1.to_be_bytes());
        ipv4(src.0, dst.0, 6, &l4)
    }

    #[test]
    fn steering_keeps_a_connection_and_its_splice_in_one_shard() {
        let cfg = Config::cluster(3, [0; 16]);
        let client = ([198, 18, 0, 2], 40_001);
        let vip = ([198, 18, 0, 10], 80);
        let n1 = ([198, 19, 1, 2], 80);
        let n2 = ([198, 19, 2, 2], 80);
        for shards in 2..=4u32 {
            let want = Steer::Shard(shard_of(client.0, client.1, shards));
            // VIP traffic: from the client, to the node (NAT'ed), back from the node.
            assert_eq!(steer(&cfg, 0, &tcp(client, vip), shards), want);
            assert_eq!(steer(&cfg, 1, &tcp(n1, client), shards), want);
            // The old node's new leg from a port in the client's shard, both directions.
            let port = (32768..)
                .find(|&p| shard_of(n1.0, p, shards) == shard_of(client.0, client.1, shards))
                .unwrap();
            let leg = ([198, 19, 1, 2], port);
            assert_eq!(steer(&cfg, 1, &tcp(leg, n2), shards), want);
            assert_eq!(steer(&cfg, 2, &tcp(n2, leg), shards), want);
            // The hand-off request names the held connection's peer: the client.
            let repr = control::RequestRepr {
                key_id: 1,
                counter: 7,
                held_peer: control::Endpoint::new(client.0, client.1),
                held_local: control::Endpoint::new(n1.0, 80),
                new_local: control::Endpoint::new(leg.0, leg.1),
                new_remote: control::Endpoint::new(n2.0, 80),
                consumed: 0,
                sent: 0,
            };
            let mut udp = vec![0u8; 8 + control::REQUEST_LEN];
            udp[2..4].copy_from_slice(&control::DEFAULT_PORT.to_be_bytes());
            repr.emit(&mut udp[8..], &[0; 16]).unwrap();
            let req = ipv4(n1.0, [198, 19, 1, 1], 17, &udp);
            assert_eq!(
                steer(&cfg, 1, &req, shards),
                Steer::Control(shard_of(client.0, client.1, shards))
            );
            // ARP everywhere, anything else to shard 0.
            let mut arp = vec![0u8; 42];
            arp[12..14].copy_from_slice(&[0x08, 0x06]);
            assert_eq!(steer(&cfg, 2, &arp, shards), Steer::Arp);
            assert_eq!(
                steer(&cfg, 1, &ipv4(n1.0, n2.0, 1, &[0; 8]), shards),
                Steer::Shard(0)
            );
            assert_eq!(steer(&cfg, 0, &[0u8; 10], shards), Steer::Shard(0));
        }
        // One shard: everything is shard 0.
        assert_eq!(steer(&cfg, 0, &tcp(client, vip), 1), Steer::Shard(0));
    }

    #[test]
    fn arp_copies_only_teach() {
        let mut f = vec![0u8; 42];
        f[20..22].copy_from_slice(&[0, 1]);
        arp_as_reply(&mut f);
        assert_eq!(&f[20..22], &[0, 2]);
        // Shard 0 handles and counts ARP; the others only learn from their copies.
        assert!(!is_arp_copy(0, Steer::Arp));
        assert!(is_arp_copy(1, Steer::Arp));
        assert!(!is_arp_copy(1, Steer::Shard(1)));
    }
}
