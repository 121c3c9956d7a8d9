//! Stage 2, classify: what a parsed packet is to the switch, from its addresses and the port it
//! came in on alone (no table state).
//!
//! Ingress filtering, the VIP's served ports, and routes between back-end nodes. A TCP segment
//! that the lookup stage finds in a flow on the port that flow's direction uses skips this
//! stage: its addresses were classified when the flow was created, on that port, and the flow
//! key is exactly those addresses.

use smoltcp::wire::Ipv4Address;

use super::{Out, Switch};
use crate::config::{PortConfig, PortId, PortRole};
use crate::counters::DropReason;
use crate::table::FlowKey;

impl Switch<'_> {
    /// Ingress filtering (RFC 2827 style): a back-end port carries only its own subnet's
    /// addresses (not the gateway's); the client side may carry any address but the cluster's
    /// own (back-end subnets, gateways, the VIP). Without it a node could claim a client's
    /// address and have another node's traffic for that client steered to itself.
    #[inline]
    pub(super) fn source_allowed(&self, pc: &PortConfig, src: [u8; 4]) -> bool {
        let a = u32::from_be_bytes(src);
        match pc.role {
            PortRole::Backend => {
                pc.contains(Ipv4Address::from_octets(src)) && src != pc.gateway.octets()
            }
            PortRole::Client => !self.cluster_nets.iter().any(|&(net, mask)| a & mask == net),
        }
    }

    /// A TCP segment no flow holds on this port: its source must pass ingress filtering, and
    /// from the client side it must be for a served port of the VIP.
    #[inline]
    pub(super) fn classify_tcp(&self, pc: &PortConfig, key: &FlowKey) -> Result<(), DropReason> {
        if !self.source_allowed(pc, key.src) {
            return Err(DropReason::SrcSpoofed);
        }
        if pc.role == PortRole::Client {
            let vip = key.dst == self.config.vip.octets();
            if !vip {
                return Err(DropReason::NoRoute);
            }
            if self.config.service(key.dport).is_none() {
                return Err(DropReason::VipNotServed);
            }
        }
        Ok(())
    }

    /// A back-end to back-end route: the destination is a node on another back-end port.
    pub(super) fn route_between_nodes(&self, in_port: PortId, dst: Ipv4Address) -> Option<Out> {
        let pin = self.config.ports.get(in_port as usize)?;
        if pin.role != PortRole::Backend {
            return None;
        }
        let p = self.config.route(dst)?;
        let pc = self.config.ports.get(p as usize)?;
        if pc.role != PortRole::Backend || p == in_port || dst == pc.gateway {
            return None;
        }
        Some(Out {
            port: p,
            next_hop: dst,
        })
    }

    /// True when `ip` is one of the switch's own addresses on `port` (its gateway, or the VIP
    /// on the client side).
    pub(super) fn owns(&self, port: PortId, ip: Ipv4Address) -> bool {
        let Some(pc) = self.config.ports.get(port as usize) else {
            return false;
        };
        ip == pc.gateway || (pc.role == PortRole::Client && ip == self.config.vip)
    }
}
