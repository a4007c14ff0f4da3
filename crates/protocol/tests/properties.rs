//! Property tests over random instruction sequences, all through the signed
//! path (`Ledger::submit`):
//! - money is conserved after every instruction;
//! - no task is ever assigned to a dead, under-staked or incapable node;
//! - a rejected instruction changes nothing;
//! - replaying any accepted signed instruction is rejected;
//! - the same holds for structurally random instructions (any variant, random
//!   keys, amounts and models) from known keys or strangers, and for the
//!   bytes of a signed instruction edited and decoded as `POST /v1/tx` does.

use proptest::prelude::*;
use splitup_protocol::state::Ledger;
use splitup_protocol::*;

const ACTORS: usize = 4;

struct World {
    ledger: Ledger,
    beacon: VrfBeacon,
    authority: Keypair,
    committee: Vec<Keypair>,
    actors: Vec<Keypair>,
    now: Millis,
}

fn key(i: u8) -> Keypair {
    Keypair::from_seed([i; 32])
}

fn spec() -> TensorSpec {
    TensorSpec {
        name: "t".into(),
        shape: vec![4],
        dtype: "float32".into(),
    }
}

fn model() -> ModelDef {
    let task = TaskDef {
        vram: 2 * GB,
        compute_units: 500,
        inputs: vec![spec()],
        outputs: vec![spec()],
        weight_uri: "file://w".into(),
        weight_hash: [1; 32],
        graph_hash: [2; 32],
    };
    let c = |s, d| Connection {
        source_task: s,
        destination_task: d,
        source_output: 0,
        dest_input: 0,
    };
    ModelDef {
        name: "chain".into(),
        inputs: vec![spec()],
        outputs: vec![spec()],
        tasks: vec![task.clone(), task],
        connections: vec![c(0, 1), c(1, 2), c(2, 0)],
    }
}

impl World {
    fn new(challenge_ppm: u64) -> World {
        let beacon = VrfBeacon::from_seed([9; 32]);
        let authority = key(1);
        let committee: Vec<Keypair> = (0..3).map(|i| key(10 + i)).collect();
        let params = Params {
            challenge_ppm,
            ..Params::default()
        };
        let g = Genesis {
            params,
            mint_authority: authority.pubkey(),
            committee: [committee[0].pubkey(), committee[1].pubkey(), committee[2].pubkey()],
            beacon: beacon.public_key(),
        };
        let ledger = Ledger::genesis(g).unwrap();
        let actors = (0..ACTORS as u8).map(|i| key(20 + i)).collect();
        let mut w = World {
            ledger,
            beacon,
            authority,
            committee,
            actors,
            now: 1_000,
        };
        let owner = w.actors[0].clone();
        let auth = w.authority.clone();
        // Registration costs a fee: the owner is funded first.
        w.send(
            &auth,
            Instruction::Mint {
                to: owner.pubkey(),
                amount: 10 * USDC,
            },
        )
        .unwrap();
        w.send(&owner, Instruction::RegisterModel(model())).unwrap();
        w
    }

    fn nonce(&self, k: &Keypair) -> u64 {
        self.ledger.accounts.get(&k.pubkey()).map(|a| a.nonce).unwrap_or(0)
    }

    fn send(&mut self, k: &Keypair, ix: Instruction) -> Result<SignedTx, ProtocolError> {
        let tx = SignedTx::sign(k, self.nonce(k), ix);
        self.ledger.submit(&tx, self.now, &self.beacon).map(|_| tx)
    }

    /// Funds, registers and stakes actors in `nodes` as capable nodes, and
    /// funds actor 0 as a user; returns the user's key.
    fn fund_nodes(&mut self, nodes: std::ops::Range<usize>) -> Keypair {
        let auth = self.authority.clone();
        for i in nodes {
            let k = self.actors[i].clone();
            self.send(
                &auth,
                Instruction::Mint {
                    to: k.pubkey(),
                    amount: 10_000 * USDC,
                },
            )
            .unwrap();
            self.send(
                &k,
                Instruction::RegisterNode {
                    vram: 8 * GB,
                    supports: vec![(1, 1), (1, 2)],
                },
            )
            .unwrap();
            self.send(&k, Instruction::Stake { amount: 5_000 * USDC }).unwrap();
        }
        let user = self.actors[0].clone();
        self.send(
            &auth,
            Instruction::Mint {
                to: user.pubkey(),
                amount: 100 * USDC,
            },
        )
        .unwrap();
        user
    }

    /// `user` submits an execution of model 1.
    fn submit_execution(&mut self, user: &Keypair) {
        self.send(
            user,
            Instruction::SubmitExecution {
                model: 1,
                priority: 0,
                input_commitment: [0; 32],
            },
        )
        .unwrap();
    }

    fn key_of(&self, p: &Pubkey) -> Option<Keypair> {
        self.actors
            .iter()
            .chain(&self.committee)
            .chain([&self.authority])
            .find(|k| k.pubkey() == *p)
            .cloned()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mint {
        by_authority: bool,
        to: usize,
        amount: u64,
    },
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
    },
    RegisterNode {
        who: usize,
        vram_gb: u64,
        tasks: u8,
    },
    Stake {
        who: usize,
        amount: u64,
    },
    RequestUnstake {
        who: usize,
        amount: u64,
    },
    Withdraw {
        who: usize,
    },
    Heartbeat {
        who: usize,
    },
    Submit {
        who: usize,
        model: u64,
        priority: u64,
    },
    /// The node assigned to (execution, task) reports, honestly or not.
    Result {
        execution: u64,
        task: u32,
        honest: bool,
        impostor: Option<usize>,
    },
    Validate {
        execution: u64,
        task: u32,
        honest: bool,
    },
    Vote {
        member: usize,
        execution: u64,
        task: u32,
        honest: bool,
    },
    Liveness {
        member: usize,
        node: usize,
        unresponsive: bool,
    },
    BadSignature {
        who: usize,
    },
    Leave {
        who: usize,
    },
    Fetched {
        who: usize,
        execution: u64,
    },
    Advance {
        ms: u64,
    },
    /// Any instruction, structurally random, signed by anyone.
    Raw {
        signer: Signer,
        ix: Instruction,
    },
    /// A signed instruction's JSON, edited, decoded as the HTTP handler
    /// does: what decodes is submitted as it is, then its instruction is
    /// signed again by `who` at its next nonce.
    Json {
        who: usize,
        ix: Instruction,
        edits: Vec<(prop::sample::Index, u8, u8)>,
    },
}

#[derive(Clone, Debug)]
enum Signer {
    Actor(usize),
    Committee(usize),
    Authority,
    Stranger(u8),
}

fn pubkey() -> impl Strategy<Value = Pubkey> {
    prop_oneof![
        (0..ACTORS as u8).prop_map(|i| key(20 + i).pubkey()),
        (0..3u8).prop_map(|i| key(10 + i).pubkey()),
        Just(key(1).pubkey()),
        any::<[u8; 32]>().prop_map(Pubkey),
    ]
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..10 * USDC,
        1_000 * USDC..10_000 * USDC,
        Just(u64::MAX),
        any::<u64>()
    ]
}

/// Sizes that are ordinary, zero, or at the edges of u64.
fn big() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..20, (0u64..20).prop_map(|g| g * GB), Just(u64::MAX), any::<u64>()]
}

fn tensor_spec() -> impl Strategy<Value = TensorSpec> {
    prop_oneof![
        3 => Just(spec()),
        1 => (proptest::collection::vec(0u64..8, 0..3), prop::sample::select(vec!["float32", "int64", ""])).prop_map(
            |(shape, dtype)| TensorSpec {
                name: "u".into(),
                shape,
                dtype: dtype.into(),
            }
        ),
    ]
}

/// Models that are often almost valid: tasks and connections among a few ids.
fn model_def() -> impl Strategy<Value = ModelDef> {
    let task = (
        big(),
        big(),
        proptest::collection::vec(tensor_spec(), 0..3),
        tensor_spec(),
    )
        .prop_map(|(vram, compute_units, inputs, output)| TaskDef {
            vram,
            compute_units,
            inputs,
            outputs: vec![output],
            weight_uri: "file://w".into(),
            weight_hash: [1; 32],
            graph_hash: [2; 32],
        });
    let conn = (0u32..4, 0u32..4, 0u32..2, 0u32..2).prop_map(|(s, d, so, di)| Connection {
        source_task: s,
        destination_task: d,
        source_output: so,
        dest_input: di,
    });
    prop_oneof![
        Just(model()),
        (
            proptest::collection::vec(task, 0..4),
            proptest::collection::vec(conn, 0..6),
            proptest::collection::vec(tensor_spec(), 0..2)
        )
            .prop_map(|(tasks, connections, outputs)| ModelDef {
                name: "random".into(),
                inputs: vec![spec()],
                outputs,
                tasks,
                connections,
            }),
    ]
}

/// Any instruction, its fields drawn around the values the ledger holds.
fn instruction() -> impl Strategy<Value = Instruction> {
    let id = 0u64..5;
    let task = 0u32..4;
    let commitment = prop_oneof![Just([0xEE; 32]), any::<[u8; 32]>()];
    prop_oneof![
        (pubkey(), amount()).prop_map(|(to, amount)| Instruction::Mint { to, amount }),
        (pubkey(), amount()).prop_map(|(to, amount)| Instruction::Transfer { to, amount }),
        model_def().prop_map(Instruction::RegisterModel),
        id.clone().prop_map(|model| Instruction::DeactivateModel { model }),
        (big(), proptest::collection::vec((0u64..3, 0u32..4), 0..4))
            .prop_map(|(vram, supports)| Instruction::RegisterNode { vram, supports }),
        amount().prop_map(|amount| Instruction::Stake { amount }),
        amount().prop_map(|amount| Instruction::RequestUnstake { amount }),
        Just(Instruction::Withdraw),
        Just(Instruction::Heartbeat),
        Just(Instruction::Leave),
        (id.clone(), big(), any::<[u8; 32]>()).prop_map(|(model, priority, input_commitment)| {
            Instruction::SubmitExecution {
                model,
                priority,
                input_commitment,
            }
        }),
        (
            id.clone(),
            task.clone(),
            commitment.clone(),
            prop_oneof![
                Just(vec![]),
                Just(vec!["file://out".to_string()]),
                (0usize..3000).prop_map(|n| vec!["x".repeat(n)]),
                (0usize..80).prop_map(|n| vec!["u".to_string(); n]),
            ]
        )
            .prop_map(|(execution, task, commitment, output_uris)| Instruction::SubmitResult {
                execution,
                task,
                commitment,
                output_uris,
            }),
        (id.clone(), task.clone(), commitment).prop_map(|(execution, task, commitment)| {
            Instruction::SubmitValidation {
                execution,
                task,
                commitment,
            }
        }),
        id.clone().prop_map(|execution| Instruction::Fetched { execution }),
        (pubkey(), any::<bool>()).prop_map(|(node, unresponsive)| Instruction::LivenessVote { node, unresponsive }),
        (id, task, any::<bool>()).prop_map(|(execution, task, asserter_honest)| Instruction::DisputeVote {
            execution,
            task,
            asserter_honest,
        }),
    ]
}

fn signer() -> impl Strategy<Value = Signer> {
    prop_oneof![
        (0..ACTORS).prop_map(Signer::Actor),
        (0usize..3).prop_map(Signer::Committee),
        Just(Signer::Authority),
        any::<u8>().prop_map(Signer::Stranger),
    ]
}

/// Bytes that keep JSON looking like JSON.
const JSONISH: &[u8] = b"{}[]\":,0123456789-+eE.truefalsn \\xyz";

fn op() -> impl Strategy<Value = Op> {
    let who = 0..ACTORS;
    let usdc = prop_oneof![0u64..10 * USDC, 1_000 * USDC..5_000 * USDC, Just(u64::MAX)];
    prop_oneof![
        (any::<bool>(), who.clone(), usdc.clone()).prop_map(|(by_authority, to, amount)| Op::Mint {
            by_authority,
            to,
            amount
        }),
        (who.clone(), who.clone(), usdc.clone()).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        (who.clone(), 0u64..20, 0u8..4).prop_map(|(who, vram_gb, tasks)| Op::RegisterNode { who, vram_gb, tasks }),
        (who.clone(), usdc.clone()).prop_map(|(who, amount)| Op::Stake { who, amount }),
        (who.clone(), usdc).prop_map(|(who, amount)| Op::RequestUnstake { who, amount }),
        who.clone().prop_map(|who| Op::Withdraw { who }),
        who.clone().prop_map(|who| Op::Heartbeat { who }),
        (who.clone(), 0u64..3, 0u64..200).prop_map(|(who, model, priority)| Op::Submit { who, model, priority }),
        (1u64..5, 0u32..4, any::<bool>(), proptest::option::of(who.clone())).prop_map(
            |(execution, task, honest, impostor)| Op::Result {
                execution,
                task,
                honest,
                impostor
            }
        ),
        (1u64..5, 0u32..4, any::<bool>()).prop_map(|(execution, task, honest)| Op::Validate {
            execution,
            task,
            honest
        }),
        (0usize..4, 1u64..5, 0u32..4, any::<bool>()).prop_map(|(member, execution, task, honest)| Op::Vote {
            member,
            execution,
            task,
            honest
        }),
        (0usize..4, who.clone(), any::<bool>()).prop_map(|(member, node, unresponsive)| Op::Liveness {
            member,
            node,
            unresponsive
        }),
        who.clone().prop_map(|who| Op::BadSignature { who }),
        who.clone().prop_map(|who| Op::Leave { who }),
        (who, 1u64..5).prop_map(|(who, execution)| Op::Fetched { who, execution }),
        prop_oneof![1u64..5_000, 30_000u64..200_000, Just(25 * 3600 * 1000)].prop_map(|ms| Op::Advance { ms }),
        (signer(), instruction()).prop_map(|(signer, ix)| Op::Raw { signer, ix }),
        (
            0..ACTORS,
            instruction(),
            proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 0..4)
        )
            .prop_map(|(who, ix, edits)| Op::Json { who, ix, edits }),
    ]
}

fn truth(execution: u64, task: u32) -> [u8; 32] {
    *blake3::hash(&[&execution.to_le_bytes()[..], &task.to_le_bytes()].concat()).as_bytes()
}

/// The signer and instruction an op stands for (None: nothing to send).
fn materialise(w: &World, op: &Op) -> Option<(Keypair, Instruction)> {
    let a = |i: usize| w.actors[i].clone();
    let run = |e: u64, t: u32| {
        w.ledger
            .executions
            .get(&e)
            .and_then(|x| x.tasks.get((t as usize).wrapping_sub(1)))
    };
    Some(match op.clone() {
        Op::Mint {
            by_authority,
            to,
            amount,
        } => (
            if by_authority { w.authority.clone() } else { a(to) },
            Instruction::Mint {
                to: a(to).pubkey(),
                amount,
            },
        ),
        Op::Transfer { from, to, amount } => (
            a(from),
            Instruction::Transfer {
                to: a(to).pubkey(),
                amount,
            },
        ),
        Op::RegisterNode { who, vram_gb, tasks } => (
            a(who),
            Instruction::RegisterNode {
                vram: vram_gb * GB,
                supports: (1..=tasks as u32).map(|t| (1, t)).collect(),
            },
        ),
        Op::Stake { who, amount } => (a(who), Instruction::Stake { amount }),
        Op::RequestUnstake { who, amount } => (a(who), Instruction::RequestUnstake { amount }),
        Op::Withdraw { who } => (a(who), Instruction::Withdraw),
        Op::Heartbeat { who } => (a(who), Instruction::Heartbeat),
        Op::Submit { who, model, priority } => (
            a(who),
            Instruction::SubmitExecution {
                model,
                priority,
                input_commitment: [0; 32],
            },
        ),
        Op::Result {
            execution,
            task,
            honest,
            impostor,
        } => {
            let signer = match impostor {
                Some(i) => a(i),
                None => w.key_of(&run(execution, task)?.node?)?,
            };
            let commitment = if honest { truth(execution, task) } else { [0xEE; 32] };
            (
                signer,
                Instruction::SubmitResult {
                    execution,
                    task,
                    commitment,
                    output_uris: vec!["file://out".into()],
                },
            )
        }
        Op::Validate {
            execution,
            task,
            honest,
        } => {
            let signer = w.key_of(&run(execution, task)?.validator?)?;
            let commitment = if honest { truth(execution, task) } else { [0xDD; 32] };
            (
                signer,
                Instruction::SubmitValidation {
                    execution,
                    task,
                    commitment,
                },
            )
        }
        Op::Vote {
            member,
            execution,
            task,
            honest,
        } => {
            let signer = if member < 3 { w.committee[member].clone() } else { a(0) };
            (
                signer,
                Instruction::DisputeVote {
                    execution,
                    task,
                    asserter_honest: honest,
                },
            )
        }
        Op::Liveness {
            member,
            node,
            unresponsive,
        } => {
            let signer = if member < 3 { w.committee[member].clone() } else { a(1) };
            (
                signer,
                Instruction::LivenessVote {
                    node: a(node).pubkey(),
                    unresponsive,
                },
            )
        }
        Op::Raw { signer, ix } => (
            match signer {
                Signer::Actor(i) => a(i),
                Signer::Committee(i) => w.committee[i].clone(),
                Signer::Authority => w.authority.clone(),
                Signer::Stranger(i) => Keypair::from_seed([0x80 | i; 32]),
            },
            ix,
        ),
        Op::Leave { who } => (a(who), Instruction::Leave),
        Op::Fetched { who, execution } => (a(who), Instruction::Fetched { execution }),
        Op::BadSignature { .. } | Op::Advance { .. } | Op::Json { .. } => return None,
    })
}

fn check_assignments(w: &World, events: &[Event]) -> Result<(), TestCaseError> {
    for ev in events {
        let (execution, task, node) = match ev {
            Event::Assigned {
                execution, task, node, ..
            } => (*execution, *task, *node),
            Event::ValidatorAssigned {
                execution,
                task,
                validator,
                ..
            } => (*execution, *task, *validator),
            _ => continue,
        };
        let n = &w.ledger.nodes[&node];
        let e = &w.ledger.executions[&execution];
        let def = &w.ledger.models[&e.model].def.tasks[task as usize - 1];
        prop_assert_eq!(n.status, NodeStatus::Active, "assigned to an unresponsive node");
        prop_assert!(!n.suspect, "assigned to a node that missed its heartbeats");
        prop_assert!(
            n.supports.contains(&(e.model, task)),
            "assigned to a node that does not support the task"
        );
        prop_assert!(n.vram >= def.vram, "assigned to a node without the VRAM");
        prop_assert!(
            n.free_stake() >= w.ledger.stake_required(n.vram),
            "assigned to an under-staked node"
        );
        let cost = w.ledger.task_cost(def);
        prop_assert!(
            security_holds(&w.ledger.params, cost, w.ledger.slash_amount(cost, n)),
            "assigned although p(1-r)(R+S) <= C"
        );
    }
    Ok(())
}

/// Submits `tx` (`op` names it in failures) and checks: an accepted instruction
/// assigns only eligible nodes, cannot be replayed, and advances the slot
/// clock; a rejected one changes nothing; money is conserved either way.
fn submit_checked(w: &mut World, tx: &SignedTx, op: &dyn std::fmt::Debug) -> Result<(), TestCaseError> {
    let before = w.ledger.clone();
    match w.ledger.submit(tx, w.now, &w.beacon) {
        Ok(()) => {
            let events = w.ledger.poll_events();
            check_assignments(w, &events)?;
            // Replaying the very same signed instruction must fail and change nothing.
            let after = w.ledger.clone();
            let replay = w.ledger.submit(tx, w.now, &w.beacon);
            prop_assert!(
                matches!(replay, Err(ProtocolError::BadNonce { .. })),
                "replay accepted: {:?}",
                replay
            );
            prop_assert!(w.ledger == after, "a replay changed the state");
            // The slot clock: the newest recent block hash is the current one, in this slot.
            let r = &w.ledger.recent_blockhashes;
            prop_assert_eq!(
                r.back(),
                Some(&(w.now / splitup_protocol::state::SLOT_MS, w.ledger.blockhash))
            );
            prop_assert!(r.iter().zip(r.iter().skip(1)).all(|(a, b)| a.0 < b.0));
            prop_assert!(r.len() <= splitup_protocol::state::RECENT_BLOCKHASHES);
        }
        Err(e) => {
            prop_assert!(e.code() >= 1 && e.code() <= 12);
            prop_assert!(w.ledger == before, "rejected {:?} ({}) but the state changed", op, e);
        }
    }
    prop_assert_eq!(w.ledger.money_total(), w.ledger.supply as u128, "money after {:?}", op);
    Ok(())
}

fn run_ops(challenge_ppm: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w = World::new(challenge_ppm);
    // Fund and stake two capable nodes so that assignment paths are reached.
    w.fund_nodes(1..3);
    w.ledger.poll_events();
    for op in ops {
        if let Op::Advance { ms } = op {
            w.now += ms;
            w.ledger.tick(w.now, &w.beacon);
            let events = w.ledger.poll_events();
            check_assignments(&w, &events)?;
            prop_assert_eq!(w.ledger.money_total(), w.ledger.supply as u128, "money after a tick");
            continue;
        }
        if let Op::BadSignature { who } = op {
            let k = w.actors[who].clone();
            let mut tx = SignedTx::sign(&k, w.nonce(&k), Instruction::Heartbeat);
            tx.signature[7] ^= 0x40;
            let before = w.ledger.clone();
            prop_assert_eq!(w.ledger.submit(&tx, w.now, &w.beacon), Err(ProtocolError::BadSignature));
            prop_assert!(w.ledger == before, "a badly signed instruction changed the state");
            continue;
        }
        if let Op::Json { who, ix, edits } = &op {
            let k = w.actors[*who].clone();
            let mut bytes = serde_json::to_vec(&SignedTx::sign(&k, w.nonce(&k), ix.clone())).unwrap();
            for (at, kind, b) in edits {
                let b = JSONISH[*b as usize % JSONISH.len()];
                match kind {
                    0 if !bytes.is_empty() => {
                        let i = at.index(bytes.len());
                        bytes[i] = b;
                    }
                    1 => bytes.insert(at.index(bytes.len() + 1), b),
                    _ if !bytes.is_empty() => {
                        bytes.remove(at.index(bytes.len()));
                    }
                    _ => {}
                }
            }
            // As `POST /v1/tx` reads a body: what decodes is submitted as it is.
            if let Ok(tx) = serde_json::from_slice::<SignedTx>(&bytes) {
                submit_checked(&mut w, &tx, &op)?;
                // Then its instruction, signed: past the signature, into the rules.
                let tx = SignedTx::sign(&k, w.nonce(&k), tx.ix);
                submit_checked(&mut w, &tx, &op)?;
            }
            continue;
        }
        let Some((signer, ix)) = materialise(&w, &op) else {
            continue;
        };
        let tx = SignedTx::sign(&signer, w.nonce(&signer), ix);
        submit_checked(&mut w, &tx, &op)?;
    }
    // A snapshot restores exactly the state it was taken from.
    let restored = Ledger::restore(&w.ledger.snapshot()).map_err(TestCaseError::fail)?;
    prop_assert!(restored == w.ledger, "a snapshot did not restore the same state");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Damaged or arbitrary snapshot bytes are an error, never a panic.
    #[test]
    fn restoring_hostile_snapshots_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let _ = Ledger::restore(&bytes);
        let mut s = World::new(80_000).ledger.snapshot();
        for (i, x) in flips {
            let i = i.index(s.len());
            s[i] ^= x.max(1);
        }
        let _ = Ledger::restore(&s);
    }

    /// Arbitrary bytes as a `POST /v1/tx` body: an error or a submission
    /// that keeps the invariants, never a panic.
    #[test]
    fn hostile_tx_bodies_never_panic(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(prop::sample::select(JSONISH), 0..512),
    ]) {
        if let Ok(tx) = serde_json::from_slice::<SignedTx>(&bytes) {
            let mut w = World::new(80_000);
            submit_checked(&mut w, &tx, &tx.ix)?;
        }
    }

    #[test]
    fn invariants_hold_with_default_p(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(80_000, ops)?;
    }

    /// p = 1: every result is challenged, so validation, dispute and slash paths run often.
    #[test]
    fn invariants_hold_when_everything_is_challenged(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(1_000_000, ops)?;
    }
}

#[test]
fn a_cheater_is_slashed_and_the_task_recomputed() {
    let mut w = World::new(1_000_000);
    let user = w.fund_nodes(1..4);
    w.submit_execution(&user);
    let cheater = w.ledger.executions[&1].tasks[0].node.unwrap();
    let ck = w.key_of(&cheater).unwrap();
    w.send(
        &ck,
        Instruction::SubmitResult {
            execution: 1,
            task: 1,
            commitment: [0xEE; 32],
            output_uris: vec![],
        },
    )
    .unwrap();
    let v = w.ledger.executions[&1].tasks[0]
        .validator
        .expect("p = 1 challenges every result");
    assert_ne!(v, cheater, "a node never validates itself");
    let vk = w.key_of(&v).unwrap();
    w.send(
        &vk,
        Instruction::SubmitValidation {
            execution: 1,
            task: 1,
            commitment: truth(1, 1),
        },
    )
    .unwrap();
    assert_eq!(w.ledger.executions[&1].tasks[0].status, TaskStatus::Disputed);
    let stake_before = w.ledger.nodes[&cheater].stake;
    for m in 0..2 {
        let mk = w.committee[m].clone();
        w.send(
            &mk,
            Instruction::DisputeVote {
                execution: 1,
                task: 1,
                asserter_honest: false,
            },
        )
        .unwrap();
    }
    let slashed = stake_before - w.ledger.nodes[&cheater].stake;
    assert_eq!(slashed, 500 * USDC, "min(max(10 C, 500 USDC), stake)");
    let r = &w.ledger.executions[&1].tasks[0];
    assert!(r.excluded.contains(&cheater));
    assert_eq!(r.status, TaskStatus::Assigned, "the task is recomputed by another node");
    assert_ne!(r.node, Some(cheater));
    assert_eq!(w.ledger.money_total(), w.ledger.supply as u128);
    // The VRF proof of the draw is stored and verifies against the beacon key.
    let events_proof = w.ledger.executions[&1].tasks[0].draw.clone();
    assert!(events_proof.is_none(), "a recomputed task has not been drawn yet");
}

#[test]
fn draws_are_verifiable_by_anyone() {
    let mut w = World::new(80_000);
    let user = w.fund_nodes(1..2);
    let k = w.actors[1].clone();
    w.submit_execution(&user);
    let hash_before = w.ledger.blockhash;
    w.send(
        &k,
        Instruction::SubmitResult {
            execution: 1,
            task: 1,
            commitment: truth(1, 1),
            output_uris: vec![],
        },
    )
    .unwrap();
    let proof = w.ledger.executions[&1].tasks[0].draw.clone().unwrap();
    let mut alpha = hash_before.to_vec();
    alpha.extend_from_slice(&1u64.to_le_bytes());
    alpha.extend_from_slice(&1u32.to_le_bytes());
    alpha.extend_from_slice(&truth(1, 1));
    assert!(
        splitup_protocol::crypto::vrf_verify(&w.ledger.beacon, &alpha, &proof).is_some(),
        "the stored proof verifies against the beacon's public key"
    );
}

#[test]
fn a_leaving_node_hands_back_its_work_at_once() {
    let mut w = World::new(80_000);
    let user = w.fund_nodes(1..3);
    w.submit_execution(&user);
    let first = w.ledger.executions[&1].tasks[0].node.unwrap();
    let deadline = w.ledger.executions[&1].tasks[0].deadline;
    let fk = w.key_of(&first).unwrap();
    w.ledger.poll_events();
    w.send(&fk, Instruction::Leave).unwrap();
    let events = w.ledger.poll_events();
    assert!(events.contains(&Event::Released {
        execution: 1,
        task: 1,
        node: first,
        validation: false
    }));
    let r = &w.ledger.executions[&1].tasks[0];
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
    let mut w = World::new(80_000);
    let user = w.fund_nodes(1..3);
    w.submit_execution(&user);
    assert!(matches!(
        w.send(&user, Instruction::Fetched { execution: 1 }),
        Err(ProtocolError::Invalid(_))
    ));
    // Everyone honest: results, and validations where drawn.
    for _ in 0..8 {
        for task in 1..=2u32 {
            let r = w.ledger.executions[&1].tasks[task as usize - 1].clone();
            let (who, ix) = match r.status {
                TaskStatus::Assigned => (
                    r.node.unwrap(),
                    Instruction::SubmitResult {
                        execution: 1,
                        task,
                        commitment: truth(1, task),
                        output_uris: vec![],
                    },
                ),
                TaskStatus::Challenged => (
                    r.validator.unwrap(),
                    Instruction::SubmitValidation {
                        execution: 1,
                        task,
                        commitment: truth(1, task),
                    },
                ),
                _ => continue,
            };
            let k = w.key_of(&who).unwrap();
            w.send(&k, ix).unwrap();
        }
    }
    let nk = w.actors[1].clone();
    assert_eq!(w.ledger.executions[&1].status, ExecStatus::Completed);
    assert!(matches!(
        w.send(&nk, Instruction::Fetched { execution: 1 }),
        Err(ProtocolError::Unauthorized(_))
    ));
    w.send(&user, Instruction::Fetched { execution: 1 }).unwrap();
    assert!(w.ledger.executions[&1].fetched);
}

#[test]
fn a_damaged_snapshot_is_refused() {
    let mut w = World::new(80_000);
    w.ledger.poll_events();
    let mut s = w.ledger.snapshot();
    assert!(Ledger::restore(&s).unwrap() == w.ledger);
    let n = s.len();
    s[n - 3] ^= 1;
    assert!(Ledger::restore(&s).unwrap_err().contains("damaged"));
    assert!(Ledger::restore(b"junk").is_err());
}

/// Found by the `ledger_tx` fuzz target. An execution failed (no eligible
/// node for its next task) while its first task was in dispute: failing
/// released the asserter's hold and dispute, but the task stayed Disputed,
/// and the committee's votes then released them again (u32 underflow: a
/// panic with overflow checks, else a node whose stake could never be
/// withdrawn). A finished execution now takes no more results, validations
/// or votes.
#[test]
fn regression_votes_on_a_failed_execution_are_refused() {
    let mut w = World::new(1_000_000);
    let user = w.fund_nodes(1..3);
    w.submit_execution(&user);
    let asserter = w.ledger.executions[&1].tasks[0].node.unwrap();
    let ak = w.key_of(&asserter).unwrap();
    w.send(
        &ak,
        Instruction::SubmitResult {
            execution: 1,
            task: 1,
            commitment: truth(1, 1),
            output_uris: vec![],
        },
    )
    .unwrap();
    assert_eq!(w.ledger.executions[&1].tasks[0].status, TaskStatus::Challenged);
    // Nobody heartbeats or validates: the validators time out, the task goes
    // to the committee, and task 2 finds no live node until the execution fails.
    while w.ledger.executions[&1].status == ExecStatus::InProgress && w.now < 30 * 24 * 3600 * 1000 {
        w.now += 10_000;
        w.ledger.tick(w.now, &w.beacon);
    }
    assert!(matches!(w.ledger.executions[&1].status, ExecStatus::Failed(_)));
    assert_eq!(w.ledger.executions[&1].tasks[0].status, TaskStatus::Disputed);
    assert_eq!(w.ledger.nodes[&asserter].disputes, 0, "failing released the dispute");
    assert_eq!(w.ledger.nodes[&asserter].load, 0, "failing released the hold");
    for m in 0..2 {
        let mk = w.committee[m].clone();
        let before = w.ledger.clone();
        let r = w.send(
            &mk,
            Instruction::DisputeVote {
                execution: 1,
                task: 1,
                asserter_honest: true,
            },
        );
        assert!(matches!(r, Err(ProtocolError::UnexpectedResult { .. })), "{r:?}");
        assert!(w.ledger == before);
    }
    assert_eq!(w.ledger.nodes[&asserter].disputes, 0);
    assert_eq!(w.ledger.money_total(), w.ledger.supply as u128);
}
