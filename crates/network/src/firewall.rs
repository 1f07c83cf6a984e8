//! NAT in vessel's own nftables table (`table ip vessel`), never touching anyone else's.
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
    Prefix,
};
use nftables::helper::{self, NftablesError};
use nftables::schema::{Chain, NfListObject, NfObject, Rule, Table};
use nftables::stmt::{Match, Operator, Statement, NAT};
use nftables::types::{NfChainType, NfFamily, NfHook};

use crate::spec::{PortMap, Subnet};
use crate::{Error, Result};

/// vessel's table.
pub const TABLE: &str = "vessel";
const FAMILY: NfFamily = NfFamily::IP;

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

fn masquerade() -> Statement<'static> {
    Statement::Masquerade(None)
}

/// Installs the table, its chains and a network's rules: masquerade of traffic leaving
/// the subnet for elsewhere, and of host loopback traffic DNATed onto the bridge (its
/// source 127.0.0.1 would be unanswerable from inside). Replaces earlier copies.
pub fn add_network(network_id: &str, bridge: &str, subnet: Subnet) -> Result<()> {
    let tag = network_tag(network_id);
    let mut batch = Batch::new();
    base_chains(&mut batch);
    for h in handles(&[tag.as_str()])? {
        batch.delete(h);
    }
    let br = || Expression::String(bridge.to_string().into());
    batch.add(rule(
        "postrouting",
        vec![
            matches(payload("ip", "saddr"), Operator::EQ, prefix(subnet)),
            matches(oifname(), Operator::NEQ, br()),
            masquerade(),
        ],
        &tag,
    ));
    batch.add(rule(
        "postrouting",
        vec![
            matches(oifname(), Operator::EQ, br()),
            matches(
                payload("ip", "saddr"),
                Operator::EQ,
                prefix(Subnet {
                    addr: Ipv4Addr::new(127, 0, 0, 0),
                    prefix: 8,
                }),
            ),
            masquerade(),
        ],
        &tag,
    ));
    helper::apply_ruleset(&batch.to_nftables()).map_err(nft_err("add the network's NAT rules"))
}

/// Publishes `ports` of the instance at `ip`: DNAT of packets for a local address (or the
/// given host address) and the host port, both arriving (prerouting) and sent by the host
/// itself (output, so 127.0.0.1:port works).
pub fn add_ports(instance: &str, ip: Ipv4Addr, ports: &[PortMap]) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let tag = instance_tag(instance);
    let mut batch = Batch::new();
    base_chains(&mut batch);
    for chain in ["prerouting", "output"] {
        for p in ports {
            let dest = match p.host_ip {
                Some(a) => matches(
                    payload("ip", "daddr"),
                    Operator::EQ,
                    Expression::String(a.to_string().into()),
                ),
                None => matches(
                    Expression::Named(NamedExpression::Fib(Fib {
                        result: FibResult::Type,
                        flags: HashSet::from([FibFlag::Daddr]),
                    })),
                    Operator::EQ,
                    Expression::String("local".into()),
                ),
            };
            batch.add(rule(
                chain,
                vec![
                    dest,
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
                ],
                &tag,
            ));
        }
    }
    helper::apply_ruleset(&batch.to_nftables())
        .map_err(nft_err("add the published ports' DNAT rules"))
}

/// Our rules whose comment is one of `tags`, as delete commands.
fn handles(tags: &[&str]) -> Result<Vec<NfListObject<'static>>> {
    let listed = match helper::get_current_ruleset_with_args(
        helper::DEFAULT_NFT,
        &["list", "table", "ip", TABLE],
    ) {
        Ok(l) => l,
        // No table yet: nothing of ours to find.
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file") => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(nft_err("list vessel's nftables table")(e)),
    };
    let mut out = Vec::new();
    for obj in listed.objects.iter() {
        if let NfObject::ListObject(NfListObject::Rule(r)) = obj {
            let mine = r.comment.as_deref().is_some_and(|c| tags.contains(&c));
            if mine && r.handle.is_some() {
                out.push(NfListObject::Rule(Rule {
                    family: FAMILY,
                    table: TABLE.into(),
                    chain: r.chain.to_string().into(),
                    expr: Cow::Owned(Vec::new()),
                    handle: r.handle,
                    index: None,
                    comment: None,
                }));
            }
        }
    }
    Ok(out)
}

/// Deletes every rule tagged with one of `tags`. Idempotent.
pub fn remove(tags: &[&str]) -> Result<()> {
    let found = handles(tags)?;
    if found.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for h in found {
        batch.delete(h);
    }
    helper::apply_ruleset(&batch.to_nftables()).map_err(nft_err("delete vessel's rules"))
}
