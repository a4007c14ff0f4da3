//! Who the VRF draws: in proportion to free stake, whatever the nodes'
//! loads, and beyond anyone's steering. A node can change the block hash
//! that goes into a draw (any instruction does, a `Transfer` included), but
//! without the beacon's key it cannot tell which hash draws what.

mod common;

use common::*;
use splitup_protocol::crypto::validation_seal;
use splitup_protocol::state::Ledger;
use splitup_protocol::*;
use std::collections::BTreeMap;

/// Submits without the checks of `World::send` (which clone the ledger):
/// these tests run thousands of instructions.
fn send(w: &mut World, k: &Keypair, ix: Instruction) {
    let tx = w.sign(k, ix);
    w.ledger.submit(&tx, w.now, &w.beacon).unwrap();
}

fn result(e: u64, c: [u8; 32]) -> Instruction {
    Instruction::SubmitResult {
        execution: e,
        task: 1,
        commitment: c,
        output_uris: uris(&c),
    }
}

/// The validator of (e, 1) seals and reveals the truth.
fn validate(w: &mut World, e: u64) {
    let v = w.run(e, 1).validator.unwrap();
    let k = w.key_of(&v);
    let c = truth(e, 1);
    send(
        w,
        &k,
        Instruction::SubmitValidation {
            execution: e,
            task: 1,
            seal: validation_seal(&v, e, 1, &c),
        },
    );
    send(
        w,
        &k,
        Instruction::RevealValidation {
            execution: e,
            task: 1,
            commitment: c,
            output_uris: uris(&c),
        },
    );
}

/// A network of nodes with these stakes (USDC), all supporting the one
/// task of model 1.
fn net(stakes: &[u64], challenge_ppm: u64) -> World {
    let p = Params {
        challenge_ppm,
        node_load_max: 16,
        ..Params::default()
    };
    let mut w = World::new(p, 11, stakes.len()).unwrap();
    w.register_model(chain(&[(1_000, GB)]));
    for (i, s) in stakes.iter().enumerate() {
        w.add_node(i, 8 * GB, s * USDC, vec![(1, 1)]);
    }
    let u = w.users[0].pubkey();
    w.mint(u, 1_000_000 * USDC);
    w.ledger.poll_events();
    w
}

/// `count` lies within 5 standard deviations of `mean` (a sum of
/// independent draws with this `variance`).
fn within(what: &str, count: f64, mean: f64, variance: f64) {
    let sd = variance.sqrt();
    assert!(
        (count - mean).abs() <= 5.0 * sd + 1.0,
        "{what}: drawn {count} times, expected {mean:.1} ± {sd:.1}"
    );
}

#[test]
fn asserters_and_validators_are_drawn_by_stake_share_blind_to_load() {
    let stakes = [2_000u64, 3_000, 6_000, 12_000, 3_000, 24_000];
    let mut w = net(&stakes, PPM);
    let keys: Vec<Pubkey> = w.nodes.iter().map(|k| k.pubkey()).collect();
    // Node 4 has node 1's stake, and holds ten tasks elsewhere (of a load
    // limit of 16): its chance must be node 1's.
    w.ledger.nodes.get_mut(&keys[4]).unwrap().load = 10;
    let stake_of = |k: &Pubkey| stakes[keys.iter().position(|x| x == k).unwrap()] as f64;
    let total: f64 = stakes.iter().map(|s| *s as f64).sum();
    let user = w.users[0].clone();
    let mut asserted: BTreeMap<Pubkey, f64> = BTreeMap::new();
    let mut validated: BTreeMap<Pubkey, f64> = BTreeMap::new();
    let mut expect_a: BTreeMap<Pubkey, (f64, f64)> = BTreeMap::new();
    let mut expect_v: BTreeMap<Pubkey, (f64, f64)> = BTreeMap::new();
    for _ in 0..1_200 {
        let ix = Instruction::SubmitExecution {
            model: 1,
            priority: 0,
            input_commitment: [0; 32],
        };
        send(&mut w, &user, ix);
        let e = w.ledger.next_execution - 1;
        let a = w.run(e, 1).node.unwrap();
        *asserted.entry(a).or_default() += 1.0;
        for k in &keys {
            let p = stake_of(k) / total;
            let x = expect_a.entry(*k).or_default();
            x.0 += p;
            x.1 += p * (1.0 - p);
        }
        let ak = w.key_of(&a);
        send(&mut w, &ak, result(e, truth(e, 1)));
        let v = w.run(e, 1).validator.unwrap();
        *validated.entry(v).or_default() += 1.0;
        // The validator is drawn among the others, by their share of the stake.
        for k in keys.iter().filter(|k| **k != a) {
            let p = stake_of(k) / (total - stake_of(&a));
            let x = expect_v.entry(*k).or_default();
            x.0 += p;
            x.1 += p * (1.0 - p);
        }
        validate(&mut w, e);
        assert_eq!(w.ledger.executions[&e].status, ExecStatus::Completed);
        w.ledger.poll_events();
    }
    for (i, k) in keys.iter().enumerate() {
        let (m, var) = expect_a[k];
        within(
            &format!("node {i} as asserter"),
            asserted.get(k).copied().unwrap_or(0.0),
            m,
            var,
        );
        let (m, var) = expect_v[k];
        within(
            &format!("node {i} as validator"),
            validated.get(k).copied().unwrap_or(0.0),
            m,
            var,
        );
    }
    assert_eq!(w.ledger.nodes[&keys[4]].load, 10, "the loads were left as they were");
}

/// How a node that can only see public state would try to dodge the
/// challenge of its result: before committing it, send 0 to 4 transfers
/// (each moves the block hash) and pick the count that `guess` says is not
/// challenged. `None`: every count is predicted challenged.
fn dodge(w: &World, node: &Keypair, e: u64, guess: &dyn Beacon) -> Option<usize> {
    let to = w.users[0].pubkey();
    let mut l: Ledger = w.ledger.clone();
    for k in 0..5 {
        let mut try_l = l.clone();
        let tx = SignedTx::sign(node, try_l.accounts[&node.pubkey()].nonce, result(e, truth(e, 1)));
        try_l.submit(&tx, w.now, guess).unwrap();
        if try_l.executions[&e].tasks[0].status == TaskStatus::Completed {
            return Some(k);
        }
        let tx = SignedTx::sign(
            node,
            l.accounts[&node.pubkey()].nonce,
            Instruction::Transfer { to, amount: 1 },
        );
        l.submit(&tx, w.now, guess).unwrap();
    }
    None
}

#[test]
fn transfers_cannot_steer_a_challenge() {
    let mut w = net(&[3_000, 3_000, 3_000, 3_000], PPM / 2);
    let guess = VrfBeacon::from_seed([0xAA; 32]);
    let user = w.users[0].clone();
    let n = 300;
    let (mut blind, mut keyed) = (0, 0);
    for _ in 0..n {
        let ix = Instruction::SubmitExecution {
            model: 1,
            priority: 0,
            input_commitment: [0; 32],
        };
        send(&mut w, &user, ix);
        let e = w.ledger.next_execution - 1;
        let node = w.key_of(&w.run(e, 1).node.unwrap());
        // With the beacon's key, the transfers would steer the draw (the
        // control: this test can tell steering from chance).
        keyed += dodge(&w, &node, e, &w.beacon).is_none() as u32;
        // Without it, the node's best guess is worth nothing.
        let k = dodge(&w, &node, e, &guess).unwrap_or(0);
        for _ in 0..k {
            let to = user.pubkey();
            send(&mut w, &node, Instruction::Transfer { to, amount: 1 });
        }
        send(&mut w, &node, result(e, truth(e, 1)));
        if w.run(e, 1).status == TaskStatus::Challenged {
            blind += 1;
            validate(&mut w, e);
        }
        assert_eq!(w.ledger.executions[&e].status, ExecStatus::Completed);
        w.ledger.poll_events();
    }
    // p = 1/2 whatever the node did; with the key it would be (1/2)^5.
    within(
        "challenges of a node steering blind",
        blind as f64,
        n as f64 / 2.0,
        n as f64 / 4.0,
    );
    assert!(keyed < n / 8, "steering with the key: {keyed} challenges of {n}");
}
