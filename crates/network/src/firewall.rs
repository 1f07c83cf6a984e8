//! NAT and filtering in vessel's own nftables table (`table ip vessel`), never touching
//! anyone else's.
//!
//! Besides NAT, each network gets two defences (issue 14):
//! - a guard at raw priority in prerouting that drops packets arriving from its bridge
//!   for 127.0.0.0/8. Publishing ports on the host's loopback needs `route_localnet` on
//!   the bridge (see [`crate::link::allow_localnet`]), and with it the host would accept
//!   such packets from a container and deliver them to services bound to 127.0.0.1;
//! - a forward filter that lets into the bridge only replies, traffic between its own
//!   ports and connections a published port's DNAT set up: other networks cannot reach
//!   it (isolation), nor can anything outside the host reach unpublished ports.
//!
//! Our chains' policy is accept and we only ever drop: a base chain of another table
//! sees every packet too, so we neither can nor try to override anyone else's verdict.
//!
//! Driven through the `nftables` crate, which speaks nft's JSON API (`nft -j`): typed
//! rules, one atomic batch per change, and listings we can parse to find our rules by
//! comment. Every rule carries a comment naming its owner (`vessel-net:<id>` for a
//! network, `vessel:<instance id>` for a published port), so removal is "delete every
//! rule with this comment": idempotent, and possible after any crash.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::Ipv4Addr;

use nftables::batch::Batch;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix, CT,
};
use nftables::helper::{self, NftablesError};
use nftables::schema::{Chain, NfListObject, NfObject, Rule, Table};
use nftables::stmt::{Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::spec::{PortMap, Subnet};
use crate::{Error, Result};

/// vessel's table.
pub const TABLE: &str = "vessel";
const FAMILY: NfFamily = NfFamily::IP;
/// The guard against packets for the host's loopback from a bridge: at raw priority, before
/// conntrack and NAT see them.
const GUARD_CHAIN: &str = "raw-prerouting";
const RAW_PRIORITY: i32 = -300;
/// The forward filter.
const FORWARD_CHAIN: &str = "forward";
const FILTER_PRIORITY: i32 = 0;
const LOOPBACK: Subnet = Subnet {
    addr: Ipv4Addr::new(127, 0, 0, 0),
    prefix: 8,
};

fn nft_err(what: &str) -> impl FnOnce(NftablesError) -> Error + '_ {
    move |e| {
        let detail = match &e {
            NftablesError::NftFailed { stderr, .. } => stderr.trim().to_string(),
            other => other.to_string(),
        };
        Error::Firewall(what.to_string(), detail)
    }
}

/// The comment of a network's rules.
pub fn network_tag(network_id: &str) -> String {
    format!("vessel-net:{network_id}")
}

/// The comment of an instance's rules.
pub fn instance_tag(instance: &str) -> String {
    format!("vessel:{instance}")
}

fn base_chains(batch: &mut Batch<'static>) {
    batch.add(NfListObject::Table(Table {
        family: FAMILY,
        name: TABLE.into(),
        handle: None,
    }));
    for (name, hook, prio) in [
        ("prerouting", NfHook::Prerouting, -100),
        ("output", NfHook::Output, -100),
        ("postrouting", NfHook::Postrouting, 100),
    ] {
        batch.add(NfListObject::Chain(Chain {
            family: FAMILY,
            table: TABLE.into(),
            name: name.into(),
            _type: Some(NfChainType::NAT),
            hook: Some(hook),
            prio: Some(prio),
            ..Chain::default()
        }));
    }
    for (name, hook, prio) in [
        (GUARD_CHAIN, NfHook::Prerouting, RAW_PRIORITY),
        (FORWARD_CHAIN, NfHook::Forward, FILTER_PRIORITY),
    ] {
        batch.add(NfListObject::Chain(Chain {
            family: FAMILY,
            table: TABLE.into(),
            name: name.into(),
            _type: Some(NfChainType::Filter),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
    }
}

fn rule(chain: &'static str, expr: Vec<Statement<'static>>, tag: &str) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: FAMILY,
        table: TABLE.into(),
        chain: chain.into(),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some(tag.to_string().into()),
    })
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn prefix(s: Subnet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(s.addr.to_string().into())),
        len: s.prefix as u32,
    }))
}

fn oifname() -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta {
        key: MetaKey::Oifname,
    }))
}

fn iifname() -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta {
        key: MetaKey::Iifname,
    }))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

fn masquerade() -> Statement<'static> {
    Statement::Masquerade(None)
}

/// Installs the table, its chains and a network's rules, replacing earlier copies:
/// - masquerade of traffic leaving the subnet for elsewhere, and of host loopback traffic
///   DNATed onto the bridge (its source 127.0.0.1 would be unanswerable from inside);
/// - the loopback guard: packets from the bridge for 127.0.0.0/8 are dropped;
/// - the forward filter of traffic into the bridge: replies, traffic between the
///   bridge's own ports (seen here when `br_netfilter` is loaded) and DNATed connections
///   to published ports pass; everything else (other networks, the outside world
///   reaching unpublished ports) is dropped. Traffic out of the bridge is left alone.
pub fn add_network(network_id: &str, bridge: &str, subnet: Subnet) -> Result<()> {
    let tag = network_tag(network_id);
    let mut batch = Batch::new();
    base_chains(&mut batch);
    for h in listing()?.tagged(&[tag.as_str()]) {
        batch.delete(h);
    }
    network_rules(&mut batch, &tag, bridge, subnet);
    helper::apply_ruleset(&batch.to_nftables())
        .map_err(nft_err("add the network's NAT and filter rules"))
}

fn network_rules(batch: &mut Batch<'static>, tag: &str, bridge: &str, subnet: Subnet) {
    let br = || Expression::String(bridge.to_string().into());
    batch.add(rule(
        GUARD_CHAIN,
        vec![
            matches(iifname(), Operator::EQ, br()),
            matches(payload("ip", "daddr"), Operator::EQ, prefix(LOOPBACK)),
            drop(),
        ],
        tag,
    ));
    for stmts in [
        vec![
            matches(oifname(), Operator::EQ, br()),
            matches(
                ct("state"),
                Operator::IN,
                Expression::List(vec![
                    Expression::String("established".into()),
                    Expression::String("related".into()),
                ]),
            ),
            accept(),
        ],
        vec![
            matches(iifname(), Operator::EQ, br()),
            matches(oifname(), Operator::EQ, br()),
            accept(),
        ],
        vec![
            matches(oifname(), Operator::EQ, br()),
            matches(
                ct("status"),
                Operator::IN,
                Expression::String("dnat".into()),
            ),
            accept(),
        ],
        vec![matches(oifname(), Operator::EQ, br()), drop()],
    ] {
        batch.add(rule(FORWARD_CHAIN, stmts, tag));
    }
    batch.add(rule(
        "postrouting",
        vec![
            matches(payload("ip", "saddr"), Operator::EQ, prefix(subnet)),
            matches(oifname(), Operator::NEQ, br()),
            masquerade(),
        ],
        tag,
    ));
    batch.add(rule(
        "postrouting",
        vec![
            matches(oifname(), Operator::EQ, br()),
            matches(payload("ip", "saddr"), Operator::EQ, prefix(LOOPBACK)),
            masquerade(),
        ],
        tag,
    ));
}

/// The network an instance is on, as its rules need it.
pub struct NetworkRules<'a> {
    /// The network's id.
    pub id: &'a str,
    /// Its bridge.
    pub bridge: &'a str,
    /// Its subnet.
    pub subnet: Subnet,
}

/// Publishes `ports` of the instance at `ip` afresh (replacing its earlier rules), and
/// (re)installs the rules of its network if its loopback guard is missing: a bridge wired
/// by an older vessel, or a table someone flushed, must not stay unguarded just because
/// the bridge exists. One listing, and at most one batch.
///
/// A published port is DNAT of packets for a local address (or the given host address)
/// and the host port, both arriving (prerouting) and sent by the host itself (output, so
/// 127.0.0.1:port works). Nothing arriving from elsewhere is DNATed for a loopback
/// address: only the host itself sends to 127.0.0.0/8 legitimately, so such a packet on
/// a wire is forged (sent to the host's MAC) and a port published on 127.0.0.1 alone
/// must not answer it.
pub fn add_instance(
    net: &NetworkRules<'_>,
    instance: &str,
    ip: Ipv4Addr,
    ports: &[PortMap],
) -> Result<()> {
    let net_tag = network_tag(net.id);
    let tag = instance_tag(instance);
    let listed = listing()?;
    let guarded = listed.has(GUARD_CHAIN, &net_tag);
    let stale = listed.tagged(&[tag.as_str()]);
    if guarded && stale.is_empty() && ports.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    base_chains(&mut batch);
    for h in stale {
        batch.delete(h);
    }
    if !guarded {
        for h in listed.tagged(&[net_tag.as_str()]) {
            batch.delete(h);
        }
        network_rules(&mut batch, &net_tag, net.bridge, net.subnet);
    }
    port_rules(&mut batch, &tag, ip, ports);
    helper::apply_ruleset(&batch.to_nftables()).map_err(nft_err("add the instance's DNAT rules"))
}

/// The DNAT rules of `ports` published for the instance at `ip`.
fn port_rules(batch: &mut Batch<'static>, tag: &str, ip: Ipv4Addr, ports: &[PortMap]) {
    for chain in ["prerouting", "output"] {
        for p in ports {
            let arriving = chain == "prerouting";
            let mut stmts = match p.host_ip {
                Some(a) if arriving && a.is_loopback() => continue,
                Some(a) => vec![matches(
                    payload("ip", "daddr"),
                    Operator::EQ,
                    Expression::String(a.to_string().into()),
                )],
                None => vec![matches(
                    Expression::Named(NamedExpression::Fib(Fib {
                        result: FibResult::Type,
                        flags: HashSet::from([FibFlag::Daddr]),
                    })),
                    Operator::EQ,
                    Expression::String("local".into()),
                )],
            };
            if arriving && p.host_ip.is_none() {
                stmts.push(matches(
                    payload("ip", "daddr"),
                    Operator::NEQ,
                    prefix(LOOPBACK),
                ));
            }
            stmts.extend([
                matches(
                    payload(p.proto.as_str(), "dport"),
                    Operator::EQ,
                    Expression::Number(p.host_port as u32),
                ),
                Statement::DNAT(Some(NAT {
                    addr: Some(Expression::String(ip.to_string().into())),
                    family: None,
                    port: Some(Expression::Number(p.container_port as u32)),
                    flags: None,
                })),
            ]);
            batch.add(rule(chain, stmts, tag));
        }
    }
}

/// Our rules as listed: (chain, handle, comment).
struct Listing(Vec<(String, u32, String)>);

impl Listing {
    /// The rules whose comment is one of `tags`, as delete commands.
    fn tagged(&self, tags: &[&str]) -> Vec<NfListObject<'static>> {
        self.0
            .iter()
            .filter(|(_, _, c)| tags.contains(&c.as_str()))
            .map(|(chain, handle, _)| {
                NfListObject::Rule(Rule {
                    family: FAMILY,
                    table: TABLE.into(),
                    chain: chain.clone().into(),
                    expr: Cow::Owned(Vec::new()),
                    handle: Some(*handle),
                    index: None,
                    comment: None,
                })
            })
            .collect()
    }

    /// Whether `chain` holds a rule tagged `tag`.
    fn has(&self, chain: &str, tag: &str) -> bool {
        self.0.iter().any(|(ch, _, c)| ch == chain && c == tag)
    }
}

/// Every commented rule of our table.
fn listing() -> Result<Listing> {
    let listed = match helper::get_current_ruleset_with_args(
        helper::DEFAULT_NFT,
        &["list", "table", "ip", TABLE],
    ) {
        Ok(l) => l,
        // No table yet: nothing of ours to find.
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file") => {
            return Ok(Listing(Vec::new()))
        }
        Err(e) => return Err(nft_err("list vessel's nftables table")(e)),
    };
    let mut out = Vec::new();
    for obj in listed.objects.iter() {
        if let NfObject::ListObject(NfListObject::Rule(r)) = obj {
            if let (Some(c), Some(h)) = (r.comment.as_deref(), r.handle) {
                out.push((r.chain.to_string(), h, c.to_string()));
            }
        }
    }
    Ok(Listing(out))
}

/// Deletes every rule tagged with one of `tags`. Idempotent.
pub fn remove(tags: &[&str]) -> Result<()> {
    let found = listing()?.tagged(tags);
    if found.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for h in found {
        batch.delete(h);
    }
    helper::apply_ruleset(&batch.to_nftables()).map_err(nft_err("delete vessel's rules"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The rules of a batch as nft's JSON: (chain, expressions).
    fn rules(batch: Batch<'static>) -> Vec<(String, Value)> {
        let v = serde_json::to_value(batch.to_nftables()).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["add"]["rule"].as_object())
            .map(|r| (r["chain"].as_str().unwrap().to_string(), r["expr"].clone()))
            .collect()
    }

    fn port(s: &str) -> PortMap {
        PortMap::parse(s).unwrap()
    }

    const LOOPBACK_NET: &str = "127.0.0.0";

    #[test]
    fn a_port_published_on_loopback_is_dnated_for_the_host_itself_only() {
        let mut b = Batch::new();
        port_rules(
            &mut b,
            "t",
            Ipv4Addr::new(10, 87, 0, 2),
            &[port("127.0.0.1:8080:80")],
        );
        let r = rules(b);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].0, "output");
    }

    #[test]
    fn a_port_published_everywhere_is_not_dnated_for_loopback_from_the_wire() {
        let mut b = Batch::new();
        port_rules(&mut b, "t", Ipv4Addr::new(10, 87, 0, 2), &[port("8080:80")]);
        let r = rules(b);
        assert_eq!(r.len(), 2, "{r:?}");
        let pre = r.iter().find(|(c, _)| c == "prerouting").unwrap();
        let not_loopback = json!({"match": {"op": "!=",
            "left": {"payload": {"protocol": "ip", "field": "daddr"}},
            "right": {"prefix": {"addr": LOOPBACK_NET, "len": 8}}}});
        assert!(
            pre.1.as_array().unwrap().contains(&not_loopback),
            "{}",
            pre.1
        );
        let out = r.iter().find(|(c, _)| c == "output").unwrap();
        assert!(!out.1.as_array().unwrap().contains(&not_loopback));
    }

    #[test]
    fn a_network_gets_its_loopback_guard_and_forward_filter() {
        let mut b = Batch::new();
        let subnet: Subnet = "10.89.7.0/24".parse().unwrap();
        network_rules(&mut b, "t", "br-x", subnet);
        let r = rules(b);
        let guard: Vec<_> = r.iter().filter(|(c, _)| c == GUARD_CHAIN).collect();
        assert_eq!(guard.len(), 1, "{r:?}");
        let g = guard[0].1.to_string();
        for part in ["iifname", "br-x", LOOPBACK_NET, "drop"] {
            assert!(g.contains(part), "{part} in {g}");
        }
        let fwd: Vec<String> = r
            .iter()
            .filter(|(c, _)| c == FORWARD_CHAIN)
            .map(|(_, e)| e.to_string())
            .collect();
        assert_eq!(fwd.len(), 4, "{fwd:?}");
        // Every forward rule is about traffic into this bridge, and the drop comes last.
        assert!(fwd
            .iter()
            .all(|e| e.contains("oifname") && e.contains("br-x")));
        assert!(fwd[..3].iter().all(|e| e.contains("accept")), "{fwd:?}");
        assert!(fwd[3].contains("drop"), "{fwd:?}");
        assert!(fwd[2].contains("dnat"), "{fwd:?}");
    }
}
