//! What everything costs, checked against the published formulas
//! (`common::oracle`), never against the ledger's own functions: fees,
//! escrows, the stake a node needs, the security condition at genesis.
//! Nothing that grows the state is free, and a task no node can run ends its
//! execution with the model's owner paying for the wasted work.

mod common;

use common::{oracle, *};
use proptest::prelude::*;
use splitup_protocol::*;

/// One task; `cu` compute units and `vram` bytes.
fn model(cu: u64, vram: u64) -> ModelDef {
    chain(&[(cu, vram)])
}

fn world() -> World {
    World::new(Params::default(), 3, 3).unwrap()
}

#[test]
fn an_unfunded_key_grows_nothing() {
    let mut w = world();
    let stranger = key(50);
    let friend = key(51);
    w.mint(friend.pubkey(), 10 * USDC);
    // Transfer 0, and a dust transfer that would open an account, are refused.
    let r = w.send(
        &stranger,
        Instruction::Transfer {
            to: friend.pubkey(),
            amount: 0,
        },
    );
    assert!(matches!(r, Err(ProtocolError::Invalid(_))), "{r:?}");
    let dust = w.params().account_min - 1;
    let r = w.send(
        &friend,
        Instruction::Transfer {
            to: key(52).pubkey(),
            amount: dust,
        },
    );
    assert!(matches!(r, Err(ProtocolError::Invalid(_))), "{r:?}");
    // At account_min it opens the account.
    let min = w.params().account_min;
    w.send(
        &friend,
        Instruction::Transfer {
            to: key(52).pubkey(),
            amount: min,
        },
    )
    .unwrap();
    assert_eq!(w.balance(&key(52).pubkey()), min);
    // Registering a model, even one whose tasks cost nothing, needs the fee.
    let r = w.send(&stranger, Instruction::RegisterModel(model(0, 0)));
    assert!(matches!(r, Err(ProtocolError::InsufficientBalance { .. })), "{r:?}");
    // A node needs the stake its VRAM requires before it exists.
    let r = w.send(
        &stranger,
        Instruction::RegisterNode {
            vram: GB,
            supports: vec![],
        },
    );
    assert!(matches!(r, Err(ProtocolError::InsufficientBalance { .. })), "{r:?}");
    assert!(w.ledger.models.is_empty() && w.ledger.nodes.is_empty());
    assert!(!w.ledger.accounts.contains_key(&stranger.pubkey()));
}

#[test]
fn oversized_descriptions_are_refused_whatever_the_balance() {
    let mut w = world();
    let owner = w.owner.clone();
    w.mint(owner.pubkey(), 1_000 * USDC);
    let p = w.params().clone();
    let mut big = model(1, 1);
    big.tasks[0].inputs[0].shape = vec![1; p.rank_max + 1];
    big.inputs[0].shape = vec![1; p.rank_max + 1];
    let r = w.send(&owner, Instruction::RegisterModel(big));
    assert!(matches!(r, Err(ProtocolError::InvalidModel(_))), "{r:?}");
    let mut long = model(1, 1);
    long.name = "x".repeat(p.name_bytes_max + 1);
    let r = w.send(&owner, Instruction::RegisterModel(long));
    assert!(matches!(r, Err(ProtocolError::InvalidModel(_))), "{r:?}");
    // A task dearer than task_cost_max (by the formula) is refused.
    let cu = p.task_cost_max / p.fee_per_cu + 1;
    assert!(oracle::task_cost(&p, &task_def(cu, 0)) > p.task_cost_max as u128);
    let r = w.send(&owner, Instruction::RegisterModel(model(cu, 0)));
    assert!(matches!(r, Err(ProtocolError::InvalidModel(_))), "{r:?}");
}

/// Exactly the formulas: C = cu × fee_per_cu + ⌈fee_per_gb × VRAM / GB⌉,
/// written out for a few hand-picked tasks, so the oracle itself is pinned.
#[test]
fn the_cost_oracle_matches_hand_computed_costs() {
    let p = Params::default();
    // 500 cu × 100 + ⌈2000 × 1 GB / GB⌉ = 50_000 + 2_000.
    assert_eq!(oracle::task_cost(&p, &task_def(500, GB)), 52_000);
    // ⌈2000 × 1 byte / 10⁹⌉ = 1: any VRAM at all costs at least a micro-USDC.
    assert_eq!(oracle::task_cost(&p, &task_def(0, 1)), 1);
    // 1.5 GB: ⌈3000⌉.
    assert_eq!(oracle::task_cost(&p, &task_def(10, 3 * GB / 2)), 1_000 + 3_000);
    // Escrow: C + ⌊1.2 C⌋ per task.
    assert_eq!(oracle::escrow(&p, &chain(&[(500, GB)])), 52_000 + 62_400);
    // Slash: max(10 C, 500 USDC), capped by the stake.
    assert_eq!(oracle::slash(&p, 52_000, u64::MAX), 500 * USDC as u128);
    assert_eq!(oracle::slash(&p, 60 * USDC as u128, u64::MAX), 600 * USDC as u128);
    assert_eq!(oracle::slash(&p, 60 * USDC as u128, 7), 7);
    // Stake: 1000 USDC + 100 USDC per started GB.
    assert_eq!(oracle::stake_required(&p, 0), 1_000 * USDC as u128);
    assert_eq!(oracle::stake_required(&p, GB + 1), 1_200 * USDC as u128);
    // Priority: min(priority × 0.05, 5) USDC, plus the execution fee.
    assert_eq!(oracle::execution_fee(&p, 3), 150_000 + 1_000);
    assert_eq!(oracle::execution_fee(&p, 1_000), 5 * USDC as u128 + 1_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A random model is accepted iff each task costs at most
    /// task_cost_max and the owner can pay model_fee + per task; its
    /// executions escrow Σ(C + R) and pay the priority and execution fees to
    /// the treasury; a node is accepted iff its balance covers the stake its
    /// VRAM requires.
    #[test]
    fn fees_escrows_and_stakes_follow_the_published_formulas(
        tasks in proptest::collection::vec((0u64..300_000, prop_oneof![0u64..=20 * GB, Just(u64::MAX / 3)]), 1..5),
        priority in prop_oneof![Just(0u64), 0u64..300, Just(u64::MAX)],
        node_vram in prop_oneof![0u64..=40 * GB, Just(u64::MAX)],
        short in 0u64..3,
    ) {
        let mut w = world();
        let p = w.params().clone();
        let def = chain(&tasks);
        let owner = w.owner.clone();
        let fee = oracle::model_fee(&p, def.tasks.len());
        let affordable = fee as u64 - short.min(1);
        w.mint(owner.pubkey(), affordable);
        let fits = def.tasks.iter().all(|t| oracle::task_cost(&p, t) <= p.task_cost_max as u128);
        let r = w.send(&owner, Instruction::RegisterModel(def.clone()));
        if short > 0 {
            prop_assert!(matches!(r, Err(ProtocolError::InsufficientBalance { .. })), "{:?}", r);
        } else if !fits {
            prop_assert!(matches!(r, Err(ProtocolError::InvalidModel(_))), "{:?}", r);
        } else {
            prop_assert!(r.is_ok(), "{:?}", r);
            prop_assert_eq!(w.ledger.treasury as u128, fee);
            prop_assert_eq!(w.balance(&owner.pubkey()), 0);
            // An execution: escrow Σ(C + R), fees to the treasury.
            let user = w.users[0].clone();
            let escrow = oracle::escrow(&p, &def);
            let fees = oracle::execution_fee(&p, priority);
            let funds = 1_000 * USDC;
            w.mint(user.pubkey(), funds);
            w.ledger.poll_events();
            let r = w.send(
                &user,
                Instruction::SubmitExecution { model: 1, priority, input_commitment: [0; 32] },
            );
            if escrow + fees > funds as u128 {
                prop_assert!(matches!(r, Err(ProtocolError::InsufficientBalance { .. })), "{:?}", r);
            } else {
                prop_assert!(r.is_ok(), "{:?}", r);
                prop_assert_eq!(w.ledger.executions[&1].escrow as u128, escrow);
                let submitted = Event::ExecutionSubmitted { execution: 1, escrow: escrow as u64 };
                prop_assert!(w.ledger.poll_events().contains(&submitted), "escrow not {}", escrow);
                prop_assert_eq!(w.balance(&user.pubkey()) as u128, funds as u128 - escrow - fees);
                prop_assert_eq!(w.ledger.treasury as u128, fee + fees);
            }
        }
        // A node: refused one micro-USDC short of the stake its VRAM requires.
        let need = oracle::stake_required(&p, node_vram);
        let node = key(90);
        if need <= u64::MAX as u128 {
            let need = need as u64;
            w.mint(node.pubkey(), need - 1);
            let reg = Instruction::RegisterNode { vram: node_vram, supports: vec![] };
            let r = w.send(&node, reg.clone());
            prop_assert!(matches!(r, Err(ProtocolError::InsufficientBalance { .. })), "{:?}", r);
            w.mint(node.pubkey(), 1);
            prop_assert!(w.send(&node, reg).is_ok());
        }
    }

    /// Genesis refuses parameters exactly when some task cost up to
    /// task_cost_max breaks p(1 − r)(R + S) > C, with S = max(mult × C,
    /// slash_min): every cost is tried (small networks keep that cheap).
    #[test]
    fn genesis_checks_the_security_condition_at_every_cost(
        challenge_ppm in 1u64..=PPM,
        collusion_ppm in 0u64..PPM,
        verification_reward_pct in 0u64..300,
        slash_multiplier in 1u64..20,
        slash_min in 0u64..5_000,
        task_cost_max in 1u64..3_000,
    ) {
        let p = Params {
            challenge_ppm,
            collusion_ppm,
            verification_reward_pct,
            slash_multiplier,
            slash_min,
            task_cost_max,
            ..Params::default()
        };
        let insecure = (1..=task_cost_max as u128)
            .find(|&c| !oracle::secure(&p, c, oracle::slash_uncapped(&p, c)));
        let g = World::new(p, 1, 0);
        match insecure {
            Some(c) => prop_assert!(
                matches!(g, Err(ProtocolError::Insecure(_))),
                "genesis accepted parameters insecure at cost {}", c
            ),
            None => prop_assert!(g.is_ok(), "genesis refused secure parameters: {:?}", g.err()),
        }
    }
}

#[test]
fn a_task_two_nodes_cannot_run_fails_its_execution_and_the_owner_pays() {
    let mut w = World::new(Params::default(), 3, 3).unwrap();
    let m = w.register_model(model(100_000, GB));
    let cost = oracle::task_cost(w.params(), &w.ledger.models[&m].def.tasks[0]) as u64;
    for i in 0..3 {
        w.add_node(i, 8 * GB, 3_000 * USDC, vec![(m, 1)]);
    }
    let owner = w.owner.clone();
    w.mint(owner.pubkey(), 100 * USDC);
    let user = w.users[0].clone();
    w.mint(user.pubkey(), 100 * USDC);
    let user_before = w.balance(&user.pubkey());
    w.send(
        &user,
        Instruction::SubmitExecution {
            model: m,
            priority: 0,
            input_commitment: [7; 32],
        },
    )
    .unwrap();
    let owner_before = w.balance(&owner.pubkey());
    let mut reporters = Vec::new();
    for round in 0..2 {
        let holder = w.run(1, 1).node.expect("assigned");
        assert!(!reporters.contains(&holder), "a reporter was assigned the task again");
        let k = w.key_of(&holder);
        // Only the assigned node may report, and only with a short reason.
        let other = w.nodes.iter().find(|k| k.pubkey() != holder).unwrap().clone();
        let report = |reason: String| Instruction::ReportUnrunnable {
            execution: 1,
            task: 1,
            reason,
        };
        assert!(w.send(&other, report("lie".into())).is_err());
        let long = "x".repeat(w.params().reason_bytes_max + 1);
        assert!(matches!(w.send(&k, report(long)), Err(ProtocolError::Invalid(_))));
        w.send(
            &k,
            report(format!("worker exceeded its memory ceiling (round {round})")),
        )
        .unwrap();
        reporters.push(holder);
        if round == 0 {
            assert_eq!(w.run(1, 1).status, TaskStatus::Assigned);
            assert_eq!(w.ledger.executions[&1].status, ExecStatus::InProgress);
        }
    }
    match &w.ledger.executions[&1].status {
        ExecStatus::Failed(why) => assert!(why.contains("2 independent nodes"), "{why}"),
        s => panic!("execution not failed: {s:?}"),
    }
    // The user gets the escrow back (only the execution fee is spent); the
    // owner paid each reporter the task's cost.
    assert_eq!(
        w.balance(&user.pubkey()),
        user_before - oracle::execution_fee(w.params(), 0) as u64
    );
    assert_eq!(w.balance(&owner.pubkey()), owner_before - 2 * cost);
    for r in &reporters {
        assert_eq!(w.ledger.nodes[r].earned_total, cost);
        assert_eq!(w.ledger.nodes[r].load, 0);
    }
}
