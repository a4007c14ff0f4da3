//! State-machine tests of validation and disputes: commit-then-reveal,
//! results bound to their URIs, committees, verdicts, deadlines, and the
//! holds a dispute takes and gives back. Every amount is computed by
//! `common::oracle` from the published formulas.

mod common;

use common::{oracle, *};
use splitup_protocol::crypto::{validation_seal, vrf_verify};
use splitup_protocol::*;
use std::collections::BTreeMap;

/// A network where every result is challenged: `nodes` nodes of 8 GB with
/// 3,000 USDC staked each, all supporting both tasks of model 1 (a chain of
/// two tasks).
fn net(nodes: usize, tweak: impl FnOnce(&mut Params)) -> World {
    let mut p = Params {
        challenge_ppm: PPM,
        unstake_lockup_ms: 1_000,
        ..Params::default()
    };
    tweak(&mut p);
    let mut w = World::new(p, 7, nodes).unwrap();
    let m = w.register_model(chain(&[(10_000, GB), (5_000, GB)]));
    for i in 0..nodes {
        w.add_node(i, 8 * GB, 3_000 * USDC, vec![(m, 1), (m, 2)]);
    }
    w.ledger.poll_events();
    w
}

/// The cost of task `t` of model 1, by the formula.
fn cost(w: &World, t: u32) -> Micro {
    oracle::task_cost(w.params(), &w.ledger.models[&1].def.tasks[t as usize - 1]) as Micro
}

struct Dispute {
    e: u64,
    asserter: Pubkey,
    validator: Pubkey,
    committee: Vec<Pubkey>,
}

/// User 0 submits an execution; its first task's asserter commits `a`, the
/// validator reveals `v` (≠ `a`): the task goes to the committee.
fn dispute(w: &mut World, a: [u8; 32], v: [u8; 32]) -> Dispute {
    let e = w.submit(0, 1);
    let asserter = w.run(e, 1).node.unwrap();
    w.result(e, 1, a).unwrap();
    let validator = w.run(e, 1).validator.expect("p = 1 challenges every result");
    w.validate(e, 1, v).unwrap();
    let r = w.run(e, 1);
    assert_eq!(r.status, TaskStatus::Disputed);
    assert!(!r.committee.contains(&asserter) && !r.committee.contains(&validator));
    Dispute {
        e,
        asserter,
        validator,
        committee: r.committee.clone(),
    }
}

/// Time passes up to `to`, every node sending its heartbeats, the ledger
/// ticking at least every 30 s.
fn advance(w: &mut World, to: Millis) {
    while w.now < to {
        for k in w.nodes.clone() {
            w.send(&k, Instruction::Heartbeat).unwrap();
        }
        let step = (to - w.now).min(30_000);
        w.tick(step);
    }
}

fn stakes(w: &World) -> BTreeMap<Pubkey, Micro> {
    w.ledger.nodes.iter().map(|(k, n)| (*k, n.stake)).collect()
}

fn balances(w: &World) -> BTreeMap<Pubkey, Micro> {
    w.ledger.accounts.iter().map(|(k, a)| (*k, a.balance)).collect()
}

fn holds(w: &World) -> Vec<(Pubkey, u32, u32)> {
    w.ledger
        .nodes
        .iter()
        .filter(|(_, n)| n.load > 0 || n.disputes > 0)
        .map(|(k, n)| (*k, n.load, n.disputes))
        .collect()
}

fn slashed(events: &[Event]) -> BTreeMap<Pubkey, Micro> {
    let mut m = BTreeMap::new();
    for e in events {
        if let Event::Slashed { node, amount, .. } = e {
            *m.entry(*node).or_default() += amount;
        }
    }
    m
}

#[test]
fn a_dispute_nobody_votes_on_ends_at_its_deadline_refunded_and_unlocked() {
    let mut w = net(6, |_| {});
    let user = w.users[0].pubkey();
    let d = dispute(&mut w, forged(1, 1, 0), truth(1, 1));
    // The asserter wants to leave with part of its stake: locked while the dispute holds it.
    let ak = w.key_of(&d.asserter);
    w.send(&ak, Instruction::RequestUnstake { amount: 100 * USDC }).unwrap();
    let to = w.now + 2_000;
    advance(&mut w, to);
    let r = w.send(&ak, Instruction::Withdraw);
    assert!(matches!(r, Err(ProtocolError::Locked(_))), "{r:?}");
    let deadline = w.run(d.e, 1).deadline;
    assert_eq!(deadline, w.now - 2_000 + w.params().dispute_ms);
    advance(&mut w, deadline - 1);
    assert_eq!(
        w.run(d.e, 1).status,
        TaskStatus::Disputed,
        "still open before its deadline"
    );
    let (escrow, user_before) = (w.ledger.executions[&d.e].escrow, w.balance(&user));
    let (stakes_before, treasury) = (stakes(&w), w.ledger.treasury);
    w.ledger.poll_events();
    w.tick(1);
    let events = w.ledger.poll_events();
    assert!(matches!(w.ledger.executions[&d.e].status, ExecStatus::Failed(_)));
    assert!(events
        .iter()
        .any(|x| matches!(x, Event::DisputeEnded { verdict, .. } if verdict.starts_with("undecided"))));
    // The user gets its escrow back; every hold is released.
    assert_eq!(w.balance(&user), user_before + escrow);
    assert_eq!(w.ledger.executions[&d.e].escrow, 0);
    assert_eq!(holds(&w), vec![]);
    // Nobody is slashed for the task; absent members pay the absent penalty.
    let s = slashed(&events);
    let penalty = w.params().absent_penalty;
    for (k, before) in &stakes_before {
        let want = if d.committee.contains(k) {
            penalty.min(*before)
        } else {
            0
        };
        assert_eq!(s.get(k).copied().unwrap_or(0), want, "{k:?}");
        assert_eq!(w.stake(k), before - want);
    }
    assert_eq!(w.ledger.treasury, treasury + penalty * d.committee.len() as u64);
    // Unlocked: the asserter withdraws.
    let b = w.balance(&d.asserter);
    w.send(&ak, Instruction::Withdraw).unwrap();
    assert_eq!(w.balance(&d.asserter), b + 100 * USDC);
}

#[test]
fn a_task_the_committee_cannot_load_ends_the_same_way() {
    let mut w = net(6, |_| {});
    let user = w.users[0].pubkey();
    let d = dispute(&mut w, forged(1, 1, 0), truth(1, 1));
    let (escrow, user_before, stakes_before) = (w.ledger.executions[&d.e].escrow, w.balance(&user), stakes(&w));
    let (last, first) = d.committee.split_last().unwrap();
    for m in first {
        w.vote(m, d.e, 1, None, None).unwrap();
        assert_eq!(w.run(d.e, 1).status, TaskStatus::Disputed);
    }
    w.ledger.poll_events();
    // The last member cannot judge either: no majority can come, it ends now.
    w.vote(last, d.e, 1, None, None).unwrap();
    assert!(w.now < w.run(d.e, 1).deadline);
    let events = w.ledger.poll_events();
    assert!(matches!(w.ledger.executions[&d.e].status, ExecStatus::Failed(_)));
    assert_eq!(w.balance(&user), user_before + escrow);
    assert_eq!(holds(&w), vec![]);
    assert_eq!(
        slashed(&events),
        BTreeMap::new(),
        "nobody is slashed, nobody was absent"
    );
    assert_eq!(stakes(&w), stakes_before);
}

#[test]
fn late_votes_are_refused() {
    let mut w = net(6, |_| {});
    let d = dispute(&mut w, forged(1, 1, 0), truth(1, 1));
    let deadline = w.run(d.e, 1).deadline;
    // One millisecond before the deadline a vote counts; at it, none does
    // (even before the tick that ends the dispute has run).
    w.now = deadline - 1;
    w.vote(&d.committee[0], d.e, 1, Some(false), Some(true)).unwrap();
    w.now = deadline;
    let r = w.vote(&d.committee[1], d.e, 1, Some(false), Some(true));
    assert!(matches!(r, Err(ProtocolError::Locked(_))), "{r:?}");
    assert_eq!(w.run(d.e, 1).votes.len(), 1);
    // The tick then ends it undecided (one vote is no majority of three).
    w.tick(0);
    assert!(matches!(w.ledger.executions[&d.e].status, ExecStatus::Failed(_)));
}

#[test]
fn a_dispute_without_enough_judges_ends_at_once_refunded() {
    // Three nodes: the asserter, the validator, and one judge (two needed).
    let mut w = net(3, |_| {});
    let user = w.users[0].pubkey();
    let e = w.submit(0, 1);
    let escrow = w.ledger.executions[&e].escrow;
    let before = (w.balance(&user), stakes(&w));
    w.result(e, 1, forged(e, 1, 0)).unwrap();
    w.ledger.poll_events();
    w.validate(e, 1, truth(e, 1)).unwrap();
    let events = w.ledger.poll_events();
    let committee = events.iter().find_map(|x| match x {
        Event::Disputed { committee, .. } => Some(committee.clone()),
        _ => None,
    });
    assert_eq!(committee.map(|c| c.len()), Some(1));
    assert!(matches!(w.ledger.executions[&e].status, ExecStatus::Failed(_)));
    assert_eq!(w.balance(&user), before.0 + escrow);
    assert_eq!(stakes(&w), before.1);
    assert_eq!(holds(&w), vec![]);
}

#[test]
fn dispute_counters_return_to_zero_after_many_disputes() {
    let mut w = net(6, |_| {});
    let mut parties: BTreeMap<Pubkey, u32> = BTreeMap::new();
    for _ in 0..30 {
        let e = w.submit(0, 1);
        w.result(e, 1, truth(e, 1)).unwrap();
        let v = w.run(e, 1).validator.unwrap();
        // The validator's output differs within tolerance: both judged honest.
        w.validate(e, 1, forged(e, 1, 1)).unwrap();
        let r = w.run(e, 1).clone();
        for k in [r.node.unwrap(), v].iter().chain(&r.committee) {
            *parties.entry(*k).or_default() += 1;
            assert!(w.ledger.nodes[k].disputes >= 1);
        }
        for m in &r.committee {
            w.vote(m, e, 1, Some(true), Some(true)).unwrap();
        }
        assert_eq!(w.run(e, 1).status, TaskStatus::Completed);
        w.result(e, 2, truth(e, 2)).unwrap();
        w.validate(e, 2, truth(e, 2)).unwrap();
        assert_eq!(w.ledger.executions[&e].status, ExecStatus::Completed);
        assert_eq!(holds(&w), vec![], "a finished execution holds nothing");
    }
    // Some node was party to many disputes; nothing wrapped, and it is
    // assigned again (the others step away so that it must be).
    let (busiest, n) = parties.iter().max_by_key(|(_, n)| **n).map(|(k, n)| (*k, *n)).unwrap();
    assert!(n >= 15, "{n}");
    for k in w.nodes.clone() {
        if k.pubkey() != busiest {
            w.send(&k, Instruction::Leave).unwrap();
        }
    }
    let e = w.submit(0, 1);
    assert_eq!(
        w.run(e, 1).node,
        Some(busiest),
        "the busiest node is not assigned again"
    );
}

#[test]
fn a_saturated_dispute_counter_does_not_wrap() {
    let mut w = net(6, |_| {});
    let e = w.submit(0, 1);
    let a = w.run(e, 1).node.unwrap();
    w.ledger.nodes.get_mut(&a).unwrap().disputes = u32::MAX;
    w.result(e, 1, truth(e, 1)).unwrap();
    w.validate(e, 1, forged(e, 1, 1)).unwrap();
    assert_eq!(
        w.ledger.nodes[&a].disputes,
        u32::MAX,
        "saturates instead of wrapping to 0"
    );
    let m = w.run(e, 1).committee.clone();
    for k in &m {
        w.vote(k, e, 1, Some(true), Some(false)).unwrap();
    }
    assert_eq!(w.ledger.nodes[&a].disputes, u32::MAX - 1);
}

#[test]
fn results_whose_uris_do_not_name_the_commitment_are_refused() {
    let mut w = net(6, |_| {});
    let e = w.submit(0, 1);
    let node = w.run(e, 1).node.unwrap();
    let k = w.key_of(&node);
    let c = truth(e, 1);
    let hex = splitup_protocol::crypto::to_hex(&c);
    let good = uris(&c)[0].clone();
    let bad: Vec<Vec<String>> = vec![
        vec![],
        uris(&forged(e, 1, 0)),
        vec![format!("https://store.example/v1/blobs/{}", hex.to_uppercase())],
        vec![format!("{good}?v=1")],
        vec![format!("{good}#x")],
        vec![format!("{good}/")],
        vec![format!("https://store.example/{hex}/other")],
        vec![good.clone(), uris(&forged(e, 1, 0))[0].clone()],
        vec![format!("https://store.example/v1/blobs/{}", &hex[..63])],
    ];
    for u in bad {
        let r = w.send(
            &k,
            Instruction::SubmitResult {
                execution: e,
                task: 1,
                commitment: c,
                output_uris: u.clone(),
            },
        );
        assert!(matches!(r, Err(ProtocolError::Invalid(_))), "{u:?}: {r:?}");
    }
    // Several URIs are fine when every one names the blob.
    let two = vec![good.clone(), format!("s3://bucket/x/{hex}")];
    w.send(
        &k,
        Instruction::SubmitResult {
            execution: e,
            task: 1,
            commitment: c,
            output_uris: two.clone(),
        },
    )
    .unwrap();
    assert_eq!(w.run(e, 1).output_uris, two);
    // A reveal is held to the same rule.
    let v = w.run(e, 1).validator.unwrap();
    let vk = w.key_of(&v);
    w.send(
        &vk,
        Instruction::SubmitValidation {
            execution: e,
            task: 1,
            seal: validation_seal(&v, e, 1, &c),
        },
    )
    .unwrap();
    let r = w.send(
        &vk,
        Instruction::RevealValidation {
            execution: e,
            task: 1,
            commitment: c,
            output_uris: uris(&forged(e, 1, 3)),
        },
    );
    assert!(matches!(r, Err(ProtocolError::Invalid(_))), "{r:?}");
}

/// The rules cannot check a seal against bytes (the shell does), but they
/// enforce the order: no reveal before the seal, one seal, one reveal, only
/// by the drawn validator. So the asserter's commitment, public once it is
/// committed, cannot be copied into a paid reveal without a seal first.
#[test]
fn a_validation_is_sealed_before_it_is_revealed() {
    let mut w = net(6, |_| {});
    let e = w.submit(0, 1);
    let asserter = w.run(e, 1).node.unwrap();
    let c = truth(e, 1);
    w.result(e, 1, c).unwrap();
    let v = w.run(e, 1).validator.unwrap();
    let (vk, ak) = (w.key_of(&v), w.key_of(&asserter));
    let other = w
        .nodes
        .iter()
        .find(|k| k.pubkey() != v && k.pubkey() != asserter)
        .unwrap()
        .clone();
    let seal = validation_seal(&v, e, 1, &c);
    let reveal = Instruction::RevealValidation {
        execution: e,
        task: 1,
        commitment: c,
        output_uris: uris(&c),
    };
    let seal_ix = |seal| Instruction::SubmitValidation {
        execution: e,
        task: 1,
        seal,
    };
    let paid_before = w.balance(&v);
    // Copying the asserter's commitment without a seal: refused, unpaid.
    let r = w.send(&vk, reveal.clone());
    assert!(matches!(r, Err(ProtocolError::UnexpectedResult { .. })), "{r:?}");
    assert_eq!(w.balance(&v), paid_before);
    // Only the drawn validator seals.
    for k in [&ak, &other] {
        let r = w.send(k, seal_ix(seal));
        assert!(matches!(r, Err(ProtocolError::UnexpectedResult { .. })), "{r:?}");
    }
    w.send(&vk, seal_ix(seal)).unwrap();
    assert_eq!(w.run(e, 1).validator_seal, Some(seal));
    // One seal only: it cannot be replaced once the validator learns more.
    let r = w.send(&vk, seal_ix([0; 32]));
    assert!(matches!(r, Err(ProtocolError::UnexpectedResult { .. })), "{r:?}");
    // Only the validator reveals.
    for k in [&ak, &other] {
        let r = w.send(k, reveal.clone());
        assert!(matches!(r, Err(ProtocolError::UnexpectedResult { .. })), "{r:?}");
    }
    w.send(&vk, reveal.clone()).unwrap();
    assert_eq!(w.run(e, 1).status, TaskStatus::Completed);
    let r = w.send(&vk, reveal);
    assert!(r.is_err(), "a second reveal: {r:?}");
    // The seal binds the validator, the task and the bytes: another
    // validator's seal, or one over the hash instead of the bytes, differs.
    assert_ne!(validation_seal(&other.pubkey(), e, 1, &c), seal);
    assert_ne!(validation_seal(&v, e, 2, &c), seal);
    assert_ne!(seal, c);
}

#[test]
fn a_griefing_validator_loses_stake_and_the_honest_asserter_is_paid() {
    let mut w = net(6, |_| {});
    let d = dispute(&mut w, truth(1, 1), forged(1, 1, 7));
    let p = w.params().clone();
    let c = cost(&w, 1);
    let (b0, s0, t0, x0) = (
        balances(&w),
        stakes(&w),
        w.ledger.treasury,
        w.ledger.executions[&d.e].escrow,
    );
    let (m1, m2, m3) = (d.committee[0], d.committee[1], d.committee[2]);
    w.vote(&m1, d.e, 1, Some(true), Some(false)).unwrap();
    assert_eq!(w.run(d.e, 1).status, TaskStatus::Disputed, "one vote is no majority");
    w.ledger.poll_events();
    w.vote(&m2, d.e, 1, Some(true), Some(false)).unwrap();
    assert_eq!(
        w.run(d.e, 1).status,
        TaskStatus::Disputed,
        "a majority, but a member is still re-executing: not decided before it votes"
    );
    // The third member dissents: it loses stake, the majority stands.
    w.vote(&m3, d.e, 1, Some(false), Some(true)).unwrap();
    let events = w.ledger.poll_events();
    assert_eq!(
        w.run(d.e, 1).status,
        TaskStatus::Completed,
        "every member voted: decided"
    );
    let slash = oracle::slash(&p, c as u128, s0[&d.validator]) as Micro;
    let reward = oracle::committee_reward(&p, c as u128) as Micro;
    let m3_slash = oracle::slash(&p, c as u128, s0[&m3]) as Micro;
    assert_eq!(slashed(&events), BTreeMap::from([(d.validator, slash), (m3, m3_slash)]));
    assert_eq!(w.stake(&d.validator), s0[&d.validator] - slash);
    assert_eq!(w.balance(&d.validator), b0[&d.validator], "a griefer earns nothing");
    assert_eq!(w.balance(&d.asserter), b0[&d.asserter] + c + slash / 2);
    assert_eq!(w.balance(&m1), b0[&m1] + reward);
    assert_eq!(w.balance(&m2), b0[&m2] + reward);
    assert_eq!(w.balance(&m3), b0[&m3], "a member against the majority earns nothing");
    assert_eq!(w.stake(&m3), s0[&m3] - m3_slash);
    assert_eq!(w.ledger.treasury, t0 + slash + m3_slash - slash / 2 - 2 * reward);
    assert_eq!(w.ledger.executions[&d.e].escrow, x0 - c);
    assert_eq!(w.ledger.nodes[&d.validator].disputes, 0);
    // Late: a vote after the end is refused (the dispute is over).
    assert!(w.vote(&m3, d.e, 1, Some(true), Some(false)).is_err());
}

/// Members who vote against the majority lose stake; the majority is paid;
/// the cheating asserter is slashed (half to the honest validator, who is
/// also paid its reward), and the task and the work downstream of it are
/// recomputed.
#[test]
fn committee_members_voting_against_the_majority_lose_stake() {
    let mut w = net(6, |_| {});
    let d = dispute(&mut w, forged(1, 1, 0), truth(1, 1));
    let p = w.params().clone();
    let c = cost(&w, 1);
    // Task 2 read task 1's output optimistically.
    assert_eq!(w.run(d.e, 2).status, TaskStatus::Assigned);
    let (b0, s0, t0) = (balances(&w), stakes(&w), w.ledger.treasury);
    let (m1, m2, m3) = (d.committee[0], d.committee[1], d.committee[2]);
    w.vote(&m1, d.e, 1, Some(false), Some(true)).unwrap();
    w.vote(&m2, d.e, 1, Some(true), Some(false)).unwrap();
    assert_eq!(w.run(d.e, 1).status, TaskStatus::Disputed, "one to one");
    w.ledger.poll_events();
    w.vote(&m3, d.e, 1, Some(false), Some(true)).unwrap();
    let events = w.ledger.poll_events();
    let slash_a = oracle::slash(&p, c as u128, s0[&d.asserter]) as Micro;
    let slash_m = oracle::slash(&p, c as u128, s0[&m2]) as Micro;
    let reward = oracle::committee_reward(&p, c as u128) as Micro;
    let r = oracle::verification_reward(&p, c as u128) as Micro;
    assert_eq!(slashed(&events), BTreeMap::from([(d.asserter, slash_a), (m2, slash_m)]));
    assert_eq!(w.stake(&m2), s0[&m2] - slash_m);
    assert_eq!(w.balance(&m2), b0[&m2]);
    assert_eq!(w.balance(&m1), b0[&m1] + reward);
    assert_eq!(w.balance(&m3), b0[&m3] + reward);
    assert_eq!(w.balance(&d.validator), b0[&d.validator] + slash_a / 2 + r);
    assert_eq!(w.balance(&d.asserter), b0[&d.asserter], "a cheat is never paid");
    assert_eq!(w.ledger.treasury, t0 + slash_a + slash_m - 2 * reward - slash_a / 2);
    // Recomputed: task 1 by another node, task 2 (which read the forged
    // output) back to waiting for it.
    assert!(events.contains(&Event::Invalidated {
        execution: d.e,
        task: 1
    }));
    assert!(events.contains(&Event::Invalidated {
        execution: d.e,
        task: 2
    }));
    let r1 = w.run(d.e, 1);
    assert_eq!(r1.status, TaskStatus::Assigned);
    assert_ne!(r1.node, Some(d.asserter));
    assert!(r1.excluded.contains(&d.asserter));
    assert_eq!(w.run(d.e, 2).status, TaskStatus::Pending);
    for k in [d.asserter, d.validator, m1, m2, m3] {
        assert_eq!(w.ledger.nodes[&k].disputes, 0);
    }
}

#[test]
fn absent_members_pay_at_the_deadline_of_a_decided_dispute() {
    let mut w = net(6, |_| {});
    let d = dispute(&mut w, truth(1, 1), forged(1, 1, 7));
    let p = w.params().clone();
    let c = cost(&w, 1);
    let (m1, m2, m3) = (d.committee[0], d.committee[1], d.committee[2]);
    // The asserter's side is decided, the validator's is not: the dispute
    // waits for the third member, who never votes.
    w.vote(&m1, d.e, 1, Some(true), None).unwrap();
    w.vote(&m2, d.e, 1, Some(true), None).unwrap();
    assert_eq!(w.run(d.e, 1).status, TaskStatus::Disputed);
    let deadline = w.run(d.e, 1).deadline;
    advance(&mut w, deadline - 1);
    let (b0, s0) = (balances(&w), stakes(&w));
    w.ledger.poll_events();
    w.tick(1);
    let events = w.ledger.poll_events();
    assert_eq!(w.run(d.e, 1).status, TaskStatus::Completed);
    let reward = oracle::committee_reward(&p, c as u128) as Micro;
    assert_eq!(slashed(&events), BTreeMap::from([(m3, p.absent_penalty.min(s0[&m3]))]));
    assert_eq!(w.balance(&m1), b0[&m1] + reward);
    assert_eq!(w.balance(&m2), b0[&m2] + reward);
    // The validator was judged neither way: neither slashed nor paid.
    assert_eq!(w.stake(&d.validator), s0[&d.validator]);
    assert_eq!(w.balance(&d.validator), b0[&d.validator]);
    assert_eq!(w.balance(&d.asserter), b0[&d.asserter] + c);
}

/// A fraud proven while a downstream task waits for a node (Ready, on the
/// forged output) sends that task back to wait for the recomputed input.
#[test]
fn regression_a_waiting_downstream_task_is_invalidated_with_its_input() {
    // Only node 5 supports task 2, and it is offline.
    let p = Params {
        challenge_ppm: PPM,
        ..Params::default()
    };
    let mut w = World::new(p, 7, 6).unwrap();
    w.register_model(chain(&[(10_000, GB), (5_000, GB)]));
    for i in 0..5 {
        w.add_node(i, 8 * GB, 3_000 * USDC, vec![(1, 1)]);
    }
    w.add_node(5, 8 * GB, 3_000 * USDC, vec![(1, 2)]);
    let k5 = w.nodes[5].clone();
    w.send(&k5, Instruction::Leave).unwrap();
    let d = dispute(&mut w, forged(1, 1, 0), truth(1, 1));
    assert_eq!(w.run(d.e, 2).status, TaskStatus::Ready, "no node for task 2");
    for m in &d.committee {
        w.vote(m, d.e, 1, Some(false), Some(true)).unwrap();
    }
    assert_eq!(w.run(d.e, 2).status, TaskStatus::Pending, "its input was forged");
    // Node 5 comes back: task 2 still waits for task 1.
    w.send(&k5, Instruction::Heartbeat).unwrap();
    w.tick(1_000);
    assert_eq!(w.run(d.e, 2).status, TaskStatus::Pending);
}

/// A node that validates one task of an execution and runs another leaves;
/// no other validator can be drawn and the committee is too small, so the
/// execution fails while its holds are being handed back. The hand-back
/// must stop there (it released the other task a second time: a hold
/// counter below zero).
#[test]
fn regression_leaving_ends_an_execution_without_releasing_twice() {
    let p = Params {
        challenge_ppm: PPM,
        ..Params::default()
    };
    let mut w = World::new(p, 7, 2).unwrap();
    w.register_model(chain(&[(10_000, GB), (5_000, GB)]));
    // Node 0 (almost all the stake) runs task 1; node 1 alone supports task 2.
    w.add_node(0, 8 * GB, 100_000 * USDC, vec![(1, 1)]);
    w.add_node(1, 8 * GB, 3_000 * USDC, vec![(1, 1), (1, 2)]);
    let (a, v) = (w.nodes[0].pubkey(), w.nodes[1].pubkey());
    let e = w.submit(0, 1);
    assert_eq!(w.run(e, 1).node, Some(a));
    w.result(e, 1, truth(e, 1)).unwrap();
    assert_eq!(w.run(e, 1).validator, Some(v));
    // Task 2 never goes to task 1's unsealed validator (it would read the
    // result it checks): it waits.
    assert_eq!(w.run(e, 2).node, None, "task 2 on the validator of task 1");
    assert_eq!(w.ledger.nodes[&v].load, 1);
    let user = w.users[0].pubkey();
    let (escrow, before) = (w.ledger.executions[&e].escrow, w.balance(&user));
    let vk = w.nodes[1].clone();
    w.send(&vk, Instruction::Leave).unwrap();
    assert!(matches!(w.ledger.executions[&e].status, ExecStatus::Failed(_)));
    assert_eq!(holds(&w), vec![]);
    assert_eq!(w.balance(&user), before + escrow);
}

/// All nodes fall silent; the tick that finds them so must not hand one's
/// task to another it is about to find silent (which burnt an attempt, and
/// with `attempts_max` = 2 failed the execution at once).
#[test]
fn regression_a_tick_hands_no_work_to_nodes_it_finds_silent() {
    let mut w = net(3, |p| p.attempts_max = 2);
    let e = w.submit(0, 1);
    let first = w.run(e, 1).node.unwrap();
    w.ledger.poll_events();
    w.tick(w.params().heartbeat_ms * w.params().heartbeats_missed_max + 1);
    let events = w.ledger.poll_events();
    let silent: Vec<Pubkey> = events
        .iter()
        .filter_map(|x| match x {
            Event::NodeUnresponsive { node } => Some(*node),
            _ => None,
        })
        .collect();
    assert_eq!(silent.len(), 3);
    assert!(
        !events.iter().any(|x| matches!(x, Event::Assigned { .. })),
        "assigned to a silent node: {events:?}"
    );
    assert_eq!(w.ledger.executions[&e].status, ExecStatus::InProgress);
    let r = w.run(e, 1);
    assert_eq!((r.status, r.attempts), (TaskStatus::Ready, 1));
    assert!(r.excluded.contains(&first));
    // Back online: the task goes to one of the others.
    for k in w.nodes.clone() {
        w.send(&k, Instruction::Heartbeat).unwrap();
    }
    w.tick(1_000);
    let r = w.run(e, 1);
    assert_eq!(r.status, TaskStatus::Assigned);
    assert_ne!(r.node, Some(first));
}

#[test]
fn a_cheater_is_slashed_and_the_task_recomputed() {
    let mut w = net(6, |_| {});
    let e = w.submit(0, 1);
    let cheater = w.run(e, 1).node.unwrap();
    let hash_before = w.ledger.blockhash;
    w.result(e, 1, forged(e, 1, 0)).unwrap();
    // The draw's VRF proof is stored, and verifies against the beacon's key
    // over (block hash, execution, task, commitment).
    let proof = w.run(e, 1).draw.clone().expect("the draw is stored");
    let alpha = [
        &hash_before[..],
        &e.to_le_bytes()[..],
        &1u32.to_le_bytes()[..],
        &forged(e, 1, 0)[..],
    ]
    .concat();
    assert!(
        vrf_verify(&w.ledger.beacon, &alpha, &proof).is_some(),
        "the draw's proof verifies"
    );
    let v = w.run(e, 1).validator.unwrap();
    assert_ne!(v, cheater, "a node never validates itself");
    w.validate(e, 1, truth(e, 1)).unwrap();
    let committee = w.run(e, 1).committee.clone();
    let stake_before = w.stake(&cheater);
    for m in &committee {
        w.vote(m, e, 1, Some(false), Some(true)).unwrap();
    }
    let c = cost(&w, 1) as u128;
    assert_eq!(
        (stake_before - w.stake(&cheater)) as u128,
        oracle::slash(w.params(), c, stake_before),
        "min(max(10 C, 500 USDC), stake)"
    );
    let r = w.run(e, 1);
    assert!(r.excluded.contains(&cheater));
    assert_eq!(r.status, TaskStatus::Assigned, "the task is recomputed by another node");
    assert_ne!(r.node, Some(cheater));
    assert!(r.draw.is_none(), "the recomputed task has not been drawn yet");
}

#[test]
fn a_leaving_node_hands_back_its_work_at_once() {
    let mut w = net(2, |p| p.challenge_ppm = 80_000);
    let e = w.submit(0, 1);
    let first = w.run(e, 1).node.unwrap();
    let deadline = w.run(e, 1).deadline;
    let fk = w.key_of(&first);
    w.ledger.poll_events();
    w.send(&fk, Instruction::Leave).unwrap();
    let events = w.ledger.poll_events();
    assert!(events.contains(&Event::Released {
        execution: e,
        task: 1,
        node: first,
        validation: false
    }));
    let r = w.run(e, 1);
    assert_eq!(
        r.status,
        TaskStatus::Assigned,
        "reassigned without waiting for {deadline}"
    );
    assert_ne!(r.node, Some(first));
    assert_eq!(r.failures, 0, "a graceful hand-back does not double the timeout");
    assert_eq!(w.ledger.nodes[&first].status, NodeStatus::Offline);
    assert_eq!(w.ledger.nodes[&first].load, 0);
    // Offline until its next heartbeat.
    w.send(&fk, Instruction::Heartbeat).unwrap();
    assert_eq!(w.ledger.nodes[&first].status, NodeStatus::Active);
}

#[test]
fn only_the_user_acknowledges_a_finished_execution() {
    let mut w = net(4, |_| {});
    let user = w.users[0].clone();
    let e = w.submit(0, 1);
    let r = w.send(&user, Instruction::Fetched { execution: e });
    assert!(matches!(r, Err(ProtocolError::Invalid(_))), "{r:?}");
    for t in 1..=2 {
        w.result(e, t, truth(e, t)).unwrap();
        w.validate(e, t, truth(e, t)).unwrap();
    }
    assert_eq!(w.ledger.executions[&e].status, ExecStatus::Completed);
    let nk = w.nodes[1].clone();
    let r = w.send(&nk, Instruction::Fetched { execution: e });
    assert!(matches!(r, Err(ProtocolError::Unauthorized(_))), "{r:?}");
    w.send(&user, Instruction::Fetched { execution: e }).unwrap();
    assert!(w.ledger.executions[&e].fetched);
}

/// Found by the `ledger_tx` fuzz target (old protocol): an execution failed
/// while its first task was in dispute; the committee's votes then released
/// the holds a second time. A finished execution takes no more votes.
#[test]
fn regression_votes_on_a_failed_execution_are_refused() {
    let mut w = net(6, |p| p.unrunnable_reports = 1);
    let d = dispute(&mut w, forged(1, 1, 0), truth(1, 1));
    // Task 2 (running optimistically) cannot run: the execution fails.
    let n2 = w.run(d.e, 2).node.unwrap();
    let k2 = w.key_of(&n2);
    w.send(
        &k2,
        Instruction::ReportUnrunnable {
            execution: d.e,
            task: 2,
            reason: "out of memory".into(),
        },
    )
    .unwrap();
    assert!(matches!(w.ledger.executions[&d.e].status, ExecStatus::Failed(_)));
    assert_eq!(w.run(d.e, 1).status, TaskStatus::Disputed);
    assert_eq!(holds(&w), vec![], "failing released every hold");
    for m in &d.committee {
        let r = w.vote(m, d.e, 1, Some(false), Some(true));
        assert!(matches!(r, Err(ProtocolError::UnexpectedResult { .. })), "{r:?}");
    }
    assert_eq!(holds(&w), vec![]);
}
