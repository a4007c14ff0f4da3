//! Nothing that grows the state is free, and a task no node can run ends
//! its execution with the model's owner paying for the wasted work.

use splitup_protocol::state::{ExecStatus, Ledger, TaskStatus};
use splitup_protocol::*;

fn key(i: u8) -> Keypair {
    Keypair::from_seed([i; 32])
}

struct Net {
    ledger: Ledger,
    beacon: VrfBeacon,
    now: Millis,
}

impl Net {
    fn new() -> Net {
        let beacon = VrfBeacon::from_seed([3; 32]);
        let g = Genesis {
            params: Params::default(),
            mint_authority: key(1).pubkey(),
            committee: [key(10).pubkey(), key(11).pubkey(), key(12).pubkey()],
            beacon: beacon.public_key(),
        };
        Net {
            ledger: Ledger::genesis(g).unwrap(),
            beacon,
            now: 1_000,
        }
    }

    fn send(&mut self, k: &Keypair, ix: Instruction) -> Result<(), ProtocolError> {
        let nonce = self.ledger.accounts.get(&k.pubkey()).map(|a| a.nonce).unwrap_or(0);
        let before = self.ledger.snapshot();
        let supply = self.ledger.supply as u128;
        let r = self
            .ledger
            .submit(&SignedTx::sign(k, nonce, ix), self.now, &self.beacon);
        assert_eq!(
            self.ledger.money_total(),
            supply.max(self.ledger.supply as u128),
            "money not conserved"
        );
        if r.is_err() {
            assert_eq!(
                self.ledger.snapshot(),
                before,
                "a rejected instruction changed the state"
            );
        }
        r
    }

    fn mint(&mut self, to: &Keypair, usdc: u64) {
        self.send(
            &key(1),
            Instruction::Mint {
                to: to.pubkey(),
                amount: usdc * USDC,
            },
        )
        .unwrap();
    }
}

fn spec() -> TensorSpec {
    TensorSpec {
        name: "t".into(),
        shape: vec![4],
        dtype: "float32".into(),
    }
}

/// One task; `cu` compute units and `vram` bytes (0 and 0: a free model before fees).
fn model(cu: u64, vram: u64) -> ModelDef {
    ModelDef {
        name: "one".into(),
        inputs: vec![spec()],
        outputs: vec![spec()],
        tasks: vec![TaskDef {
            vram,
            compute_units: cu,
            inputs: vec![spec()],
            outputs: vec![spec()],
            weight_uri: "file://w".into(),
            weight_hash: [1; 32],
            graph_hash: [2; 32],
        }],
        connections: vec![
            Connection {
                source_task: 0,
                destination_task: 1,
                source_output: 0,
                dest_input: 0,
            },
            Connection {
                source_task: 1,
                destination_task: 0,
                source_output: 0,
                dest_input: 0,
            },
        ],
    }
}

#[test]
fn an_unfunded_key_grows_nothing() {
    let mut n = Net::new();
    let stranger = key(50);
    let friend = key(51);
    n.mint(&friend, 10);
    // Transfer 0, and a dust transfer that would open an account, are refused.
    assert!(matches!(
        n.send(
            &stranger,
            Instruction::Transfer {
                to: friend.pubkey(),
                amount: 0
            }
        ),
        Err(ProtocolError::Invalid(_))
    ));
    assert!(matches!(
        n.send(
            &friend,
            Instruction::Transfer {
                to: key(52).pubkey(),
                amount: 1
            }
        ),
        Err(ProtocolError::Invalid(_))
    ));
    // Registering a model, even one whose tasks cost nothing, needs the fee.
    assert!(matches!(
        n.send(&stranger, Instruction::RegisterModel(model(0, 0))),
        Err(ProtocolError::InsufficientBalance { .. })
    ));
    // A node needs the stake its VRAM requires before it exists.
    assert!(matches!(
        n.send(
            &stranger,
            Instruction::RegisterNode {
                vram: GB,
                supports: vec![]
            }
        ),
        Err(ProtocolError::InsufficientBalance { .. })
    ));
    assert!(n.ledger.models.is_empty() && n.ledger.nodes.is_empty());
    assert!(!n.ledger.accounts.contains_key(&stranger.pubkey()));
}

#[test]
fn registration_and_submission_pay_fees_to_the_treasury() {
    let mut n = Net::new();
    let owner = key(60);
    n.mint(&owner, 10);
    let p = n.ledger.params.clone();
    n.send(&owner, Instruction::RegisterModel(model(0, 0))).unwrap();
    assert_eq!(n.ledger.treasury, p.model_fee + p.model_fee_per_task);
    // A zero-cost model still costs the execution fee per submission.
    let user = key(61);
    n.send(
        &owner,
        Instruction::Transfer {
            to: user.pubkey(),
            amount: p.execution_fee * 2 + p.account_min,
        },
    )
    .unwrap();
    let before = n.ledger.treasury;
    let submit = |n: &mut Net| {
        n.send(
            &user,
            Instruction::SubmitExecution {
                model: 1,
                priority: 0,
                input_commitment: [7; 32],
            },
        )
    };
    submit(&mut n).unwrap();
    assert_eq!(n.ledger.treasury, before + p.execution_fee);
    // Oversized descriptions are refused whatever the balance.
    n.mint(&owner, 10);
    let mut big = model(1, 1);
    big.tasks[0].inputs[0].shape = vec![1; p.rank_max + 1];
    big.inputs[0].shape = vec![1; p.rank_max + 1];
    assert!(matches!(
        n.send(&owner, Instruction::RegisterModel(big)),
        Err(ProtocolError::InvalidModel(_))
    ));
    let mut long = model(1, 1);
    long.name = "x".repeat(p.name_bytes_max + 1);
    assert!(matches!(
        n.send(&owner, Instruction::RegisterModel(long)),
        Err(ProtocolError::InvalidModel(_))
    ));
}

#[test]
fn a_task_two_nodes_cannot_run_fails_its_execution_and_the_owner_pays() {
    let mut n = Net::new();
    let owner = key(70);
    let user = key(71);
    let nodes: Vec<Keypair> = (80..83).map(key).collect();
    n.mint(&owner, 100);
    n.send(&owner, Instruction::RegisterModel(model(100_000, GB))).unwrap();
    for k in &nodes {
        n.mint(k, 5_000);
        n.send(
            k,
            Instruction::RegisterNode {
                vram: 8 * GB,
                supports: vec![(1, 1)],
            },
        )
        .unwrap();
        n.send(k, Instruction::Stake { amount: 3_000 * USDC }).unwrap();
    }
    n.mint(&user, 100);
    let user_before = n.ledger.balance(&user.pubkey());
    n.send(
        &user,
        Instruction::SubmitExecution {
            model: 1,
            priority: 0,
            input_commitment: [7; 32],
        },
    )
    .unwrap();
    let cost = n.ledger.task_cost(&n.ledger.models[&1].def.tasks[0]);
    let owner_before = n.ledger.balance(&owner.pubkey());
    let mut reporters = Vec::new();
    for round in 0..2 {
        let holder = n.ledger.executions[&1].tasks[0].node.expect("assigned");
        assert!(!reporters.contains(&holder), "a reporter was assigned the task again");
        let k = nodes.iter().find(|k| k.pubkey() == holder).unwrap().clone();
        // Only the assigned node may report, and only once per assignment.
        let other = nodes.iter().find(|k| k.pubkey() != holder).unwrap().clone();
        assert!(n
            .send(
                &other,
                Instruction::ReportUnrunnable {
                    execution: 1,
                    task: 1,
                    reason: "lie".into()
                }
            )
            .is_err());
        n.send(
            &k,
            Instruction::ReportUnrunnable {
                execution: 1,
                task: 1,
                reason: format!("worker exceeded its memory ceiling (round {round})"),
            },
        )
        .unwrap();
        reporters.push(holder);
        if round == 0 {
            assert_eq!(n.ledger.executions[&1].tasks[0].status, TaskStatus::Assigned);
            assert_eq!(n.ledger.executions[&1].status, ExecStatus::InProgress);
        }
    }
    let e = &n.ledger.executions[&1];
    match &e.status {
        ExecStatus::Failed(why) => assert!(why.contains("2 independent nodes"), "{why}"),
        s => panic!("execution not failed: {s:?}"),
    }
    // The user gets the escrow back (only the execution fee is spent); the
    // owner paid each reporter the task's cost.
    assert_eq!(
        n.ledger.balance(&user.pubkey()),
        user_before - n.ledger.params.execution_fee
    );
    assert_eq!(n.ledger.balance(&owner.pubkey()), owner_before - 2 * cost);
    for r in &reporters {
        assert_eq!(n.ledger.nodes[r].earned_total, cost);
        assert_eq!(n.ledger.nodes[r].load, 0);
    }
    // An over-long reason is refused.
    assert!(n.ledger.params.reason_bytes_max < 10_000);
}
