//! Property tests over random instruction sequences, all through the signed
//! path (`Ledger::submit`), against the rules of commit-then-reveal
//! validation and committee disputes. Nodes, users and committee members act
//! honestly, cheat, grief, copy, lie, stay silent, leave, or send what the
//! rules must refuse; time jumps to deadlines, with or without heartbeats.
//!
//! After every instruction and every tick:
//! - a shadow of the money (every balance, stake and escrow, the treasury
//!   and the supply), moved by the published formulas (`common::oracle`), not
//!   by the ledger's own functions, must match the ledger: stakes and supply
//!   always, balances, escrows and the treasury whenever no payment from the
//!   treasury or an escrow could have been cut short (nearly always; both
//!   are counted);
//! - every dispute that ended is judged again from its votes (a strict
//!   majority of `committee_size` decides), and the slashes, rewards and the
//!   outcome the ledger applied must be the ones that verdict gives; the
//!   last vote ends the dispute at once, never an earlier one;
//! - an instruction the rules must accept is accepted, one they must refuse
//!   is refused with the right error and changes nothing, and an accepted
//!   one cannot be replayed;
//! - every challenge is the VRF's (the stored proof verifies, and the draw
//!   is below p exactly when challenged); every assignment, validator and
//!   committee seat goes to a node the published eligibility rules allow,
//!   and a committee is as large as the eligible nodes allow;
//! - the holds (`load`, `disputes`) are exactly what the running work gives,
//!   so a finished execution holds nothing; no task runs ahead of its inputs;
//! - after a tick, nothing is past its deadline: every dispute has ended.
//!
//! Each case ends with everyone honest and live until every execution has
//! finished (none is lost), and a snapshot that restores the same state.
//!
//! The run counts how often each dispute, slash and timeout path was reached
//! (from events and state transitions, not from counters in the ledger),
//! prints the counts, and fails if one was never reached.

mod common;

use common::{oracle, *};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use splitup_protocol::crypto::{validation_seal, vrf_verify};
use splitup_protocol::state::{Ledger, RECENT_BLOCKHASHES, SLOT_MS};
use splitup_protocol::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

type Counts = BTreeMap<&'static str, u64>;

/// The paths a run must reach (the names the counters print).
const REQUIRED: &[&str] = &[
    "challenge drawn",
    "validator matched",
    "reveal mismatch -> dispute",
    "dispute: asserter honest",
    "dispute: asserter dishonest",
    "validator slashed",
    "committee member slashed",
    "absent member penalised",
    "undecided at deadline",
    "undecided: all voted, no majority",
    "undecided: committee too small",
    "task timed out",
    "validator replaced",
    "unrunnable reported",
    "node unresponsive",
    "failed: attempts exhausted",
    "downstream invalidated",
    "late vote refused",
    "settlement checked exactly",
];

#[derive(Clone, Debug)]
struct NodeSetup {
    /// VRAM in bytes: whole GB, or a byte more (a started GB needs its stake too).
    vram: u64,
    /// Stake above what its VRAM requires: a little short of it, less than
    /// one slash, a slash or two, or plenty.
    extra_stake_usdc: i64,
    /// Bit j: supports the j-th task of all models, in order.
    supports: u8,
}

#[derive(Clone, Debug)]
struct Setup {
    challenge_ppm: u64,
    committee_size: u32,
    attempts_max: u32,
    validator_attempts_max: u32,
    unrunnable_reports: u32,
    node_load_max: u32,
    dispute_ms: Millis,
    low_slash_min: bool,
    absent_penalty: Micro,
    beacon: u8,
    nodes: Vec<NodeSetup>,
    /// Models (chains of tasks), each task (compute units, VRAM bytes).
    models: Vec<Vec<(u64, u64)>>,
}

fn setup() -> impl Strategy<Value = Setup> {
    let node = (
        (
            prop_oneof![1 => Just(2u64), 2 => Just(4), 3 => Just(8), 2 => Just(16)],
            prop::bool::weighted(0.3),
        ),
        prop_oneof![1 => Just(-50i64), 1 => Just(100), 2 => Just(600), 2 => Just(2_000), 2 => Just(20_000)],
        prop_oneof![3 => Just(0xFFu8), 1 => any::<u8>()],
    )
        .prop_map(|((vram_gb, extra_byte), extra_stake_usdc, supports)| NodeSetup {
            vram: vram_gb * GB + extra_byte as u64,
            extra_stake_usdc,
            supports,
        });
    let task = (
        prop_oneof![3 => 0u64..20_000, 1 => 20_000u64..240_000],
        prop_oneof![6 => 0u64..=2 * GB, 2 => 2 * GB..=4 * GB, 1 => Just(12 * GB)],
    );
    (
        (
            prop_oneof![2 => Just(80_000u64), 3 => Just(1_000_000), 1 => Just(500_000)],
            prop_oneof![1 => Just(1u32), 1 => Just(2), 6 => Just(3), 1 => Just(5)],
            prop_oneof![2 => Just(2u32), 1 => Just(3), 1 => Just(6)],
            1u32..=3,
            1u32..=2,
            prop_oneof![1 => Just(1u32), 1 => Just(2), 4 => Just(4)],
        ),
        (
            prop_oneof![Just(60_000u64), Just(600_000)],
            any::<bool>(),
            prop_oneof![3 => Just(10 * USDC), 1 => Just(100_000 * USDC)],
            any::<u8>(),
            prop_oneof![1 => proptest::collection::vec(node.clone(), 3..=4), 3 => proptest::collection::vec(node, 5..=8)],
            proptest::collection::vec(proptest::collection::vec(task, 1..=3), 1..=2),
        ),
    )
        .prop_map(
            |(
                (challenge_ppm, committee_size, attempts_max, validator_attempts_max, unrunnable_reports, node_load_max),
                (dispute_ms, low_slash_min, absent_penalty, beacon, nodes, models),
            )| Setup {
                challenge_ppm,
                committee_size,
                attempts_max,
                validator_attempts_max,
                unrunnable_reports,
                node_load_max,
                dispute_ms,
                low_slash_min,
                absent_penalty,
                beacon,
                nodes,
                models,
            },
        )
}

#[derive(Clone, Copy, Debug)]
enum Jump {
    By(u64),
    /// To the ledger's next deadline exactly.
    ToNextDeadline,
    /// Just past it.
    PastNextDeadline(u64),
    /// Long enough for nodes that send no heartbeat to be unresponsive.
    Silence,
    PastDispute,
}

#[derive(Clone, Debug)]
enum Signer {
    Node(Index),
    User(usize),
    Owner,
    Authority,
    Stranger(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Submit {
        user: usize,
        model: Index,
        priority: u64,
    },
    /// Someone with a duty (an asserter, a validator, a committee member)
    /// does it, honestly or not, as `how` says (see `Sim::act`).
    Act {
        pick: Index,
        how: u8,
    },
    /// A dispute is judged: the members who have not voted vote in turn,
    /// by the evidence, except the first if `liar`; `late`: only once its
    /// deadline has passed (and no tick has run yet). With no dispute open,
    /// one is provoked first: a task's result (forged if `cheat`) meets a
    /// validator that reveals something else.
    Judge {
        pick: Index,
        liar: bool,
        late: bool,
        cheat: bool,
    },
    /// Time passes; `heartbeats`: every node kept sending its heartbeats
    /// (else all fell silent); `tick`: the ledger runs its deadlines
    /// (without one, a vote can arrive after its dispute's deadline).
    Advance {
        jump: Jump,
        heartbeats: bool,
        tick: bool,
    },
    HeartbeatAll,
    Heartbeat {
        node: Index,
    },
    Leave {
        node: Index,
    },
    Stake {
        node: Index,
        amount: Micro,
    },
    RequestUnstake {
        node: Index,
        amount: Micro,
    },
    Withdraw {
        node: Index,
    },
    Transfer {
        from: Index,
        to: Index,
        amount: Micro,
    },
    Mint {
        to: Index,
        amount: Micro,
        by_authority: bool,
    },
    Reregister {
        node: Index,
        supports: u8,
        vram_gb: u64,
    },
    Deactivate {
        model: Index,
        by_owner: bool,
    },
    Fetched {
        user: usize,
        execution: u64,
    },
    /// Any instruction, structurally random, signed by anyone.
    Raw {
        signer: Signer,
        ix: Instruction,
    },
    /// A signed instruction's JSON, edited, decoded as `POST /v1/tx` does:
    /// what decodes is submitted as it is, then its instruction is signed
    /// again at the signer's next nonce.
    Json {
        who: Index,
        ix: Instruction,
        edits: Vec<(Index, u8, u8)>,
    },
    BadSignature {
        who: Index,
    },
}

fn usdc() -> impl Strategy<Value = Micro> {
    prop_oneof![1u64..10 * USDC, 100 * USDC..3_000 * USDC, Just(u64::MAX), Just(0)]
}

fn op() -> impl Strategy<Value = Op> {
    let jump = prop_oneof![
        1 => (1u64..5_000).prop_map(Jump::By),
        3 => Just(Jump::ToNextDeadline),
        3 => (0u64..2_000).prop_map(Jump::PastNextDeadline),
        1 => Just(Jump::Silence),
        2 => Just(Jump::PastDispute),
    ];
    prop_oneof![
        4 => (0usize..2, any::<Index>(), prop_oneof![3 => Just(0u64), 1 => 0u64..200])
            .prop_map(|(user, model, priority)| Op::Submit { user, model, priority }),
        24 => (any::<Index>(), 0u8..100).prop_map(|(pick, how)| Op::Act { pick, how }),
        6 => (
            any::<Index>(),
            prop::bool::weighted(0.7),
            prop::bool::weighted(0.15),
            any::<bool>()
        )
            .prop_map(|(pick, liar, late, cheat)| Op::Judge {
                pick,
                liar,
                late,
                cheat
            }),
        8 => (jump, prop::bool::weighted(0.9), prop::bool::weighted(0.85)).prop_map(|(jump, heartbeats, tick)| Op::Advance {
            jump,
            heartbeats,
            tick
        }),
        4 => Just(Op::HeartbeatAll),
        1 => any::<Index>().prop_map(|node| Op::Heartbeat { node }),
        1 => any::<Index>().prop_map(|node| Op::Leave { node }),
        1 => (any::<Index>(), usdc()).prop_map(|(node, amount)| Op::Stake { node, amount }),
        1 => (any::<Index>(), usdc()).prop_map(|(node, amount)| Op::RequestUnstake { node, amount }),
        1 => any::<Index>().prop_map(|node| Op::Withdraw { node }),
        1 => (any::<Index>(), any::<Index>(), usdc()).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        1 => (any::<Index>(), usdc(), any::<bool>()).prop_map(|(to, amount, by_authority)| Op::Mint {
            to,
            amount,
            by_authority
        }),
        1 => (any::<Index>(), any::<u8>(), prop::sample::select(vec![2u64, 8, 16])).prop_map(
            |(node, supports, vram_gb)| Op::Reregister {
                node,
                supports,
                vram_gb
            }
        ),
        1 => (any::<Index>(), prop::bool::weighted(0.3)).prop_map(|(model, by_owner)| Op::Deactivate { model, by_owner }),
        1 => (0usize..2, 0u64..8).prop_map(|(user, execution)| Op::Fetched { user, execution }),
        2 => (signer(), instruction()).prop_map(|(signer, ix)| Op::Raw { signer, ix }),
        1 => (
            any::<Index>(),
            instruction(),
            proptest::collection::vec((any::<Index>(), 0u8..3, any::<u8>()), 0..4)
        )
            .prop_map(|(who, ix, edits)| Op::Json { who, ix, edits }),
        1 => any::<Index>().prop_map(|who| Op::BadSignature { who }),
    ]
}

fn signer() -> impl Strategy<Value = Signer> {
    prop_oneof![
        3 => any::<Index>().prop_map(Signer::Node),
        1 => (0usize..2).prop_map(Signer::User),
        1 => Just(Signer::Owner),
        1 => Just(Signer::Authority),
        1 => any::<u8>().prop_map(Signer::Stranger),
    ]
}

fn pubkey() -> impl Strategy<Value = Pubkey> {
    prop_oneof![
        (20u8..27).prop_map(|i| key(i).pubkey()),
        (1u8..5).prop_map(|i| key(i).pubkey()),
        any::<[u8; 32]>().prop_map(Pubkey),
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
            checks: vec![OutputCheck::exact(&output.name)],
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
        Just(chain(&[(500, GB), (500, GB)])),
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

fn output_uris() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        Just(vec![]),
        any::<[u8; 32]>().prop_map(|c| uris(&c)),
        (1u64..4, 1u32..3).prop_map(|(e, t)| uris(&truth(e, t))),
        (0usize..3000).prop_map(|n| vec!["x".repeat(n)]),
        (0usize..80).prop_map(|n| vec![uris(&[0xEE; 32])[0].clone(); n]),
    ]
}

/// Any instruction, its fields drawn around the values the ledger holds.
fn instruction() -> impl Strategy<Value = Instruction> {
    let id = 0u64..5;
    let task = 0u32..4;
    let commitment = prop_oneof![
        Just([0xEE; 32]),
        (1u64..4, 1u32..3).prop_map(|(e, t)| truth(e, t)),
        any::<[u8; 32]>()
    ];
    let verdict = proptest::option::of(any::<bool>());
    prop_oneof![
        (pubkey(), big()).prop_map(|(to, amount)| Instruction::Mint { to, amount }),
        (pubkey(), big()).prop_map(|(to, amount)| Instruction::Transfer { to, amount }),
        model_def().prop_map(Instruction::RegisterModel),
        id.clone().prop_map(|model| Instruction::DeactivateModel { model }),
        (big(), proptest::collection::vec((0u64..4, 0u32..4), 0..4))
            .prop_map(|(vram, supports)| Instruction::RegisterNode { vram, supports }),
        big().prop_map(|amount| Instruction::Stake { amount }),
        big().prop_map(|amount| Instruction::RequestUnstake { amount }),
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
        (id.clone(), task.clone(), commitment.clone(), output_uris()).prop_map(
            |(execution, task, commitment, output_uris)| Instruction::SubmitResult {
                execution,
                task,
                commitment,
                output_uris,
            }
        ),
        (id.clone(), task.clone(), any::<[u8; 32]>())
            .prop_map(|(execution, task, seal)| Instruction::SubmitValidation { execution, task, seal }),
        (id.clone(), task.clone(), commitment, output_uris()).prop_map(|(execution, task, commitment, output_uris)| {
            Instruction::RevealValidation {
                execution,
                task,
                commitment,
                output_uris,
            }
        }),
        (id.clone(), task.clone(), (0usize..600).prop_map(|n| "r".repeat(n))).prop_map(|(execution, task, reason)| {
            Instruction::ReportUnrunnable {
                execution,
                task,
                reason,
            }
        }),
        id.clone().prop_map(|execution| Instruction::Fetched { execution }),
        (id, task, verdict.clone(), verdict).prop_map(|(execution, task, asserter_honest, validator_honest)| {
            Instruction::DisputeVote {
                execution,
                task,
                asserter_honest,
                validator_honest,
            }
        }),
    ]
}

/// Bytes that keep JSON looking like JSON.
const JSONISH: &[u8] = b"{}[]\":,0123456789-+eE.truefalsn \\xyz";

/// Someone's duty in the current state.
#[derive(Clone, Copy, Debug)]
enum Duty {
    /// The assigned node owes a result.
    Assert(u64, u32, Pubkey),
    /// The drawn validator owes its seal.
    Seal(u64, u32, Pubkey),
    /// The validator sealed and owes its reveal.
    Reveal(u64, u32, Pubkey),
    /// A committee member who has not voted.
    Vote(u64, u32, Pubkey),
}

fn duties(l: &Ledger) -> Vec<Duty> {
    let mut out = Vec::new();
    for &e in &l.active {
        for (i, r) in l.executions[&e].tasks.iter().enumerate() {
            let t = i as u32 + 1;
            match r.status {
                TaskStatus::Assigned => out.push(Duty::Assert(e, t, r.node.unwrap())),
                TaskStatus::Challenged => match (r.validator, r.validator_seal) {
                    (Some(v), None) => out.push(Duty::Seal(e, t, v)),
                    (Some(v), Some(_)) => out.push(Duty::Reveal(e, t, v)),
                    _ => {}
                },
                TaskStatus::Disputed => {
                    for m in &r.committee {
                        if !r.votes.contains_key(m) {
                            out.push(Duty::Vote(e, t, *m));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// What an instruction must get: accepted, or refused with this error code.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Ok,
    Err(u32),
    Any,
}
const UNAUTHORIZED: u32 = 3;
const INVALID: u32 = 9;
const UNEXPECTED: u32 = 10;
const LOCKED: u32 = 12;

enum Step<'a> {
    Ix { signer: Pubkey, ix: &'a Instruction },
    Tick,
}

/// A member's vote: (asserter honest?, validator honest?).
type Vote = (Option<bool>, Option<bool>);

/// A dispute as the oracle sees it.
struct Dispute {
    asserter: Pubkey,
    validator: Option<Pubkey>,
    revealed: bool,
    committee: Vec<Pubkey>,
    votes: BTreeMap<Pubkey, Vote>,
    deadline: Millis,
    /// Drawn in this very step.
    fresh: bool,
}

/// The verdicts a strict majority of `committee_size` gives (on the
/// asserter; on the validator when it revealed).
fn verdict(p: &Params, d: &Dispute) -> (Option<bool>, Option<bool>) {
    let need = oracle::majority(p.committee_size as usize);
    let side = |f: fn(&Vote) -> Option<bool>| {
        [true, false]
            .into_iter()
            .find(|s| d.votes.values().filter(|v| f(v) == Some(*s)).count() >= need)
    };
    (side(|v| v.0), if d.revealed { side(|v| v.1) } else { None })
}

struct Sim {
    w: World,
    counts: Counts,
    /// (model, task) of every task of every model, in order (`NodeSetup::supports` bits).
    tasks: Vec<(u64, u32)>,
}

fn count(c: &mut Counts, what: &'static str) {
    *c.entry(what).or_default() += 1;
}

impl Sim {
    fn new(s: &Setup) -> Result<Sim, TestCaseError> {
        let mut params = Params {
            challenge_ppm: s.challenge_ppm,
            committee_size: s.committee_size,
            attempts_max: s.attempts_max,
            validator_attempts_max: s.validator_attempts_max,
            unrunnable_reports: s.unrunnable_reports,
            node_load_max: s.node_load_max,
            dispute_ms: s.dispute_ms,
            absent_penalty: s.absent_penalty,
            unstake_lockup_ms: 60_000,
            ..Params::default()
        };
        if s.low_slash_min && s.challenge_ppm >= 500_000 {
            // Low enough that 10 × C, not slash_min, sets some slashes.
            params.slash_min = USDC;
        }
        let mut w = World::new(params, s.beacon, s.nodes.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut tasks = Vec::new();
        for m in &s.models {
            let id = w.register_model(chain(m));
            tasks.extend((1..=m.len() as u32).map(|t| (id, t)));
        }
        for (i, n) in s.nodes.iter().enumerate() {
            let supports = tasks
                .iter()
                .enumerate()
                .filter(|(j, _)| n.supports >> j & 1 == 1)
                .map(|(_, t)| *t)
                .collect();
            let stake = (oracle::stake_required(w.params(), n.vram) as i64 + n.extra_stake_usdc * USDC as i64) as u64;
            w.add_node(i, n.vram, stake, supports);
        }
        for u in w.users.clone() {
            w.mint(u.pubkey(), 10_000 * USDC);
        }
        w.ledger.poll_events();
        Ok(Sim {
            w,
            counts: Counts::new(),
            tasks,
        })
    }

    fn node(&self, i: &Index) -> Keypair {
        self.w.nodes[i.index(self.w.nodes.len())].clone()
    }

    /// Every key that acts: nodes, users, the owner.
    fn anyone(&self, i: &Index) -> Keypair {
        let all: Vec<&Keypair> = self
            .w
            .nodes
            .iter()
            .chain(&self.w.users)
            .chain([&self.w.owner])
            .collect();
        all[i.index(all.len())].clone()
    }

    /// A node other than `p` (there are at least three).
    fn other_node(&self, p: &Pubkey) -> Keypair {
        self.w.nodes.iter().find(|k| k.pubkey() != *p).unwrap().clone()
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let l = &self.w.ledger;
        match op {
            Op::Submit { user, model, priority } => {
                let u = self.w.users[*user].clone();
                let m = 1 + model.index(l.models.len()) as u64;
                let p = &l.params;
                let def = &l.models[&m].def;
                let need = oracle::escrow(p, def) + oracle::execution_fee(p, *priority);
                let want = if l.models[&m].active && need <= l.balance(&u.pubkey()) as u128 {
                    Want::Ok
                } else {
                    Want::Any
                };
                let ix = Instruction::SubmitExecution {
                    model: m,
                    priority: *priority,
                    input_commitment: [9; 32],
                };
                self.send(&u, ix, want)?;
            }
            Op::Act { pick, how } => self.act(pick, *how)?,
            Op::Judge {
                pick,
                liar,
                late,
                cheat,
            } => {
                let open = Self::tasks_in(l, TaskStatus::Disputed);
                let (e, t) = if !open.is_empty() {
                    open[pick.index(open.len())]
                } else {
                    match self.provoke(pick, *cheat)? {
                        Some(x) => x,
                        None => return Ok(()),
                    }
                };
                self.judge(e, t, *liar, *late)?;
            }
            Op::Advance { jump, heartbeats, tick } => {
                let now = self.w.now;
                let p = &l.params;
                // The next deadline of the work (heartbeats aside, when they are sent).
                let work = l
                    .active
                    .iter()
                    .flat_map(|e| &l.executions[e].tasks)
                    .filter_map(|r| match r.status {
                        TaskStatus::Assigned | TaskStatus::Challenged | TaskStatus::Disputed => Some(r.deadline),
                        TaskStatus::Ready => r.ready_deadline,
                        _ => None,
                    });
                let next = if *heartbeats { work.min() } else { l.poll_timeout() };
                let next = next.unwrap_or(now + 1_000).max(now);
                self.w.now = match jump {
                    Jump::By(ms) => now + ms,
                    Jump::ToNextDeadline => next,
                    Jump::PastNextDeadline(ms) => next + 1 + ms,
                    Jump::Silence => now + p.heartbeat_ms * p.heartbeats_missed_max + 1,
                    Jump::PastDispute => now + p.dispute_ms + 1,
                };
                if *heartbeats {
                    for k in self.w.nodes.clone() {
                        self.send(&k, Instruction::Heartbeat, Want::Ok)?;
                    }
                }
                if *tick {
                    self.tick()?;
                }
            }
            Op::HeartbeatAll => {
                for k in self.w.nodes.clone() {
                    self.send(&k, Instruction::Heartbeat, Want::Ok)?;
                }
            }
            Op::Heartbeat { node } => {
                let k = self.node(node);
                self.send(&k, Instruction::Heartbeat, Want::Ok)?;
            }
            Op::Leave { node } => {
                let k = self.node(node);
                self.send(&k, Instruction::Leave, Want::Ok)?;
            }
            Op::Stake { node, amount } => {
                let k = self.node(node);
                let n = &l.nodes[&k.pubkey()];
                let ok = *amount <= l.balance(&k.pubkey()) && n.stake.checked_add(*amount).is_some();
                self.send(
                    &k,
                    Instruction::Stake { amount: *amount },
                    if ok { Want::Ok } else { Want::Any },
                )?;
            }
            Op::RequestUnstake { node, amount } => {
                let k = self.node(node);
                let n = &l.nodes[&k.pubkey()];
                let ok = n.unstaking.is_none() && *amount > 0 && *amount <= n.stake;
                self.send(
                    &k,
                    Instruction::RequestUnstake { amount: *amount },
                    if ok { Want::Ok } else { Want::Any },
                )?;
            }
            Op::Withdraw { node } => {
                let k = self.node(node);
                let n = &l.nodes[&k.pubkey()];
                let want = match n.unstaking {
                    Some((_, unlock)) if self.w.now >= unlock && n.load == 0 && n.disputes == 0 => Want::Ok,
                    Some((_, unlock)) if self.w.now < unlock || n.load > 0 || n.disputes > 0 => Want::Err(LOCKED),
                    _ => Want::Err(INVALID),
                };
                if want == Want::Ok {
                    count(&mut self.counts, "stake withdrawn");
                }
                self.send(&k, Instruction::Withdraw, want)?;
            }
            Op::Transfer { from, to, amount } => {
                let (f, t) = (self.anyone(from), self.anyone(to));
                let ok = *amount > 0 && *amount <= l.balance(&f.pubkey()) && l.accounts.contains_key(&t.pubkey());
                let ix = Instruction::Transfer {
                    to: t.pubkey(),
                    amount: *amount,
                };
                self.send(&f, ix, if ok { Want::Ok } else { Want::Any })?;
            }
            Op::Mint {
                to,
                amount,
                by_authority,
            } => {
                let t = self.anyone(to);
                let signer = if *by_authority {
                    self.w.authority.clone()
                } else {
                    t.clone()
                };
                let fits = l.supply.checked_add(*amount).is_some();
                let want = match (by_authority, fits) {
                    (false, _) => Want::Err(UNAUTHORIZED),
                    (true, true) => Want::Ok,
                    (true, false) => Want::Any,
                };
                let ix = Instruction::Mint {
                    to: t.pubkey(),
                    amount: *amount,
                };
                self.send(&signer, ix, want)?;
            }
            Op::Reregister {
                node,
                supports,
                vram_gb,
            } => {
                let k = self.node(node);
                let supports = self
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| supports >> j & 1 == 1)
                    .map(|(_, t)| *t)
                    .collect();
                let ix = Instruction::RegisterNode {
                    vram: vram_gb * GB,
                    supports,
                };
                self.send(&k, ix, Want::Ok)?;
            }
            Op::Deactivate { model, by_owner } => {
                let m = 1 + model.index(l.models.len()) as u64;
                let owner = l.models[&m].owner;
                let (k, want) = if *by_owner {
                    (self.w.key_of(&owner), Want::Ok)
                } else {
                    let u = self.w.users.iter().find(|u| u.pubkey() != owner).unwrap().clone();
                    (u, Want::Err(UNAUTHORIZED))
                };
                self.send(&k, Instruction::DeactivateModel { model: m }, want)?;
            }
            Op::Fetched { user, execution } => {
                let u = self.w.users[*user].clone();
                let want = match l.executions.get(execution) {
                    Some(e) if e.user == u.pubkey() && e.status != ExecStatus::InProgress => Want::Ok,
                    _ => Want::Any,
                };
                self.send(&u, Instruction::Fetched { execution: *execution }, want)?;
            }
            Op::Raw { signer, ix } => {
                let k = match signer {
                    Signer::Node(i) => self.node(i),
                    Signer::User(u) => self.w.users[*u].clone(),
                    Signer::Owner => self.w.owner.clone(),
                    Signer::Authority => self.w.authority.clone(),
                    Signer::Stranger(i) => Keypair::from_seed([0x80 | i; 32]),
                };
                self.send(&k, ix.clone(), Want::Any)?;
            }
            Op::Json { who, ix, edits } => {
                let k = self.anyone(who);
                let mut bytes = serde_json::to_vec(&self.w.sign(&k, ix.clone())).unwrap();
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
                    self.submit(&tx, Want::Any)?.ok();
                    // Then its instruction, signed: past the signature, into the rules.
                    self.send(&k, tx.ix, Want::Any)?;
                }
            }
            Op::BadSignature { who } => {
                let k = self.anyone(who);
                let mut tx = self.w.sign(&k, Instruction::Heartbeat);
                tx.signature[7] ^= 0x40;
                let before = self.w.ledger.clone();
                let r = self.w.ledger.submit(&tx, self.w.now, &self.w.beacon);
                prop_assert_eq!(r, Err(ProtocolError::BadSignature));
                prop_assert!(self.w.ledger == before, "a badly signed instruction changed the state");
            }
        }
        Ok(())
    }

    /// (execution, task) of every task of a running execution in `status`.
    fn tasks_in(l: &Ledger, status: TaskStatus) -> Vec<(u64, u32)> {
        l.active
            .iter()
            .flat_map(|e| {
                l.executions[e]
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(move |(_, r)| r.status == status)
                    .map(move |(i, _)| (*e, i as u32 + 1))
            })
            .collect()
    }

    /// Takes a running task to the committee, if it can: its result (forged
    /// if `cheat`) if it has none, then a validator that seals and reveals
    /// an output other than the asserter's.
    fn provoke(&mut self, pick: &Index, cheat: bool) -> Result<Option<(u64, u32)>, TestCaseError> {
        let l = &self.w.ledger;
        let mut at = Self::tasks_in(l, TaskStatus::Challenged);
        if at.is_empty() {
            at = Self::tasks_in(l, TaskStatus::Assigned);
        }
        if at.is_empty() {
            return Ok(None);
        }
        let (e, t) = at[pick.index(at.len())];
        if self.w.run(e, t).status == TaskStatus::Assigned {
            let k = self.w.key_of(&self.w.run(e, t).node.unwrap());
            let c = if cheat { forged(e, t, 5) } else { truth(e, t) };
            let ix = Instruction::SubmitResult {
                execution: e,
                task: t,
                commitment: c,
                output_uris: uris(&c),
            };
            self.send(&k, ix, Want::Ok)?;
        }
        let r = self.w.run(e, t);
        let running = self.w.ledger.executions[&e].status == ExecStatus::InProgress;
        let Some(v) = r.validator.filter(|_| running && r.status == TaskStatus::Challenged) else {
            return Ok(None);
        };
        let k = self.w.key_of(&v);
        // Whatever the asserter committed, the validator reveals something else.
        let other = if r.commitment == Some(truth(e, t)) {
            forged(e, t, 6)
        } else {
            truth(e, t)
        };
        if r.validator_seal.is_none() {
            let ix = Instruction::SubmitValidation {
                execution: e,
                task: t,
                seal: validation_seal(&v, e, t, &other),
            };
            self.send(&k, ix, Want::Ok)?;
        }
        let ix = Instruction::RevealValidation {
            execution: e,
            task: t,
            commitment: other,
            output_uris: uris(&other),
        };
        self.send(&k, ix, Want::Ok)?;
        let open = self.w.ledger.executions[&e].status == ExecStatus::InProgress
            && self.w.run(e, t).status == TaskStatus::Disputed;
        Ok(open.then_some((e, t)))
    }

    /// The members of the dispute on (e, t) who have not voted vote in
    /// turn, by the evidence, except the first if `liar`; `late`: only once
    /// the deadline has passed (no tick has run since).
    fn judge(&mut self, e: u64, t: u32, liar: bool, late: bool) -> Result<(), TestCaseError> {
        let r = self.w.run(e, t);
        let members: Vec<Pubkey> = r
            .committee
            .iter()
            .filter(|m| !r.votes.contains_key(m))
            .copied()
            .collect();
        if late {
            self.w.now = self.w.now.max(r.deadline);
        }
        for (i, m) in members.iter().enumerate() {
            let r = self.w.run(e, t);
            if self.w.ledger.executions[&e].status != ExecStatus::InProgress || r.status != TaskStatus::Disputed {
                break;
            }
            let honest = (
                Some(r.commitment == Some(truth(e, t))),
                r.validator_commitment.map(|c| c == truth(e, t)),
            );
            let (a, v) = if liar && i == 0 {
                (honest.0.map(|x| !x), honest.1.map(|x| !x))
            } else {
                honest
            };
            let late = self.w.now >= r.deadline;
            let want = if late { Want::Err(LOCKED) } else { Want::Ok };
            if late {
                count(&mut self.counts, "late vote refused");
            }
            let k = self.w.key_of(m);
            let ix = Instruction::DisputeVote {
                execution: e,
                task: t,
                asserter_honest: a,
                validator_honest: v,
            };
            self.send(&k, ix, want)?;
        }
        Ok(())
    }

    /// Does a duty, as `how` (0..100) says: mostly honestly, sometimes
    /// cheating, and sometimes in a way the rules must refuse.
    fn act(&mut self, pick: &Index, how: u8) -> Result<(), TestCaseError> {
        let list = duties(&self.w.ledger);
        if list.is_empty() {
            return Ok(());
        }
        match list[pick.index(list.len())] {
            Duty::Assert(e, t, node) => {
                let k = self.w.key_of(&node);
                let attempts = self.w.run(e, t).attempts as u64;
                let result = |c: [u8; 32], u: Vec<String>| Instruction::SubmitResult {
                    execution: e,
                    task: t,
                    commitment: c,
                    output_uris: u,
                };
                match how {
                    0..55 => self.send(&k, result(truth(e, t), uris(&truth(e, t))), Want::Ok)?,
                    55..80 => {
                        let c = forged(e, t, attempts);
                        self.send(&k, result(c, uris(&c)), Want::Ok)?
                    }
                    80..85 => {
                        count(&mut self.counts, "refused: URIs not naming the result");
                        let other = uris(&forged(e, t, 99));
                        self.send(&k, result(truth(e, t), other), Want::Err(INVALID))?
                    }
                    85..89 => {
                        count(&mut self.counts, "refused: result from another node");
                        let imp = self.other_node(&node);
                        self.send(&imp, result(truth(e, t), uris(&truth(e, t))), Want::Err(UNEXPECTED))?
                    }
                    89..95 => {
                        let ix = Instruction::ReportUnrunnable {
                            execution: e,
                            task: t,
                            reason: "the worker ran out of memory".into(),
                        };
                        self.send(&k, ix, Want::Ok)?
                    }
                    _ => self.send(&k, Instruction::Leave, Want::Ok)?,
                };
            }
            Duty::Seal(e, t, v) => {
                let k = self.w.key_of(&v);
                let seal = Instruction::SubmitValidation {
                    execution: e,
                    task: t,
                    seal: validation_seal(&v, e, t, &truth(e, t)),
                };
                match how {
                    0..75 => self.send(&k, seal, Want::Ok)?,
                    75..83 => {
                        count(&mut self.counts, "refused: reveal before seal");
                        let c = self.w.run(e, t).commitment.unwrap();
                        let ix = Instruction::RevealValidation {
                            execution: e,
                            task: t,
                            commitment: c,
                            output_uris: uris(&c),
                        };
                        self.send(&k, ix, Want::Err(UNEXPECTED))?
                    }
                    83..96 => {
                        count(&mut self.counts, "refused: seal by a non-validator");
                        let imp = self.other_node(&v);
                        self.send(&imp, seal, Want::Err(UNEXPECTED))?
                    }
                    _ => self.send(&k, Instruction::Leave, Want::Ok)?,
                };
            }
            Duty::Reveal(e, t, v) => {
                let k = self.w.key_of(&v);
                let reveal = |c: [u8; 32], u: Vec<String>| Instruction::RevealValidation {
                    execution: e,
                    task: t,
                    commitment: c,
                    output_uris: u,
                };
                match how {
                    0..45 => self.send(&k, reveal(truth(e, t), uris(&truth(e, t))), Want::Ok)?,
                    45..68 => {
                        let c = forged(e, t, 1_000);
                        self.send(&k, reveal(c, uris(&c)), Want::Ok)?
                    }
                    68..80 => {
                        // Copies the asserter's commitment (the shell checks the
                        // seal against the bytes; the rules cannot).
                        let c = self.w.run(e, t).commitment.unwrap();
                        self.send(&k, reveal(c, uris(&c)), Want::Ok)?
                    }
                    80..86 => {
                        count(&mut self.counts, "refused: second seal");
                        let ix = Instruction::SubmitValidation {
                            execution: e,
                            task: t,
                            seal: [1; 32],
                        };
                        self.send(&k, ix, Want::Err(UNEXPECTED))?
                    }
                    86..92 => {
                        count(&mut self.counts, "refused: reveal by a non-validator");
                        let imp = self.other_node(&v);
                        self.send(&imp, reveal(truth(e, t), uris(&truth(e, t))), Want::Err(UNEXPECTED))?
                    }
                    _ => {
                        count(&mut self.counts, "refused: URIs not naming the result");
                        self.send(&k, reveal(truth(e, t), uris(&[3; 32])), Want::Err(INVALID))?
                    }
                };
            }
            Duty::Vote(e, t, m) => {
                let r = self.w.run(e, t);
                let honest = (
                    Some(r.commitment == Some(truth(e, t))),
                    r.validator_commitment.map(|c| c == truth(e, t)),
                );
                let late = self.w.now >= r.deadline;
                let want = if late { Want::Err(LOCKED) } else { Want::Ok };
                if late {
                    count(&mut self.counts, "late vote refused");
                }
                let k = self.w.key_of(&m);
                let vote = |(a, v): (Option<bool>, Option<bool>)| Instruction::DisputeVote {
                    execution: e,
                    task: t,
                    asserter_honest: a,
                    validator_honest: v,
                };
                match how {
                    0..55 => self.send(&k, vote(honest), want)?,
                    55..75 => self.send(&k, vote((honest.0.map(|x| !x), honest.1.map(|x| !x))), want)?,
                    75..88 => self.send(&k, vote((None, None)), want)?,
                    88..94 => {
                        let first = self.send_r(&k, vote(honest), want)?;
                        let r = self.w.run(e, t);
                        let open = self.w.ledger.executions[&e].status == ExecStatus::InProgress
                            && r.status == TaskStatus::Disputed;
                        let again = match first {
                            Err(_) => want,
                            Ok(()) if open => Want::Err(INVALID),
                            Ok(()) => Want::Err(UNEXPECTED),
                        };
                        count(&mut self.counts, "refused: second vote");
                        self.send(&k, vote(honest), again)?
                    }
                    _ => {
                        count(&mut self.counts, "refused: vote by a non-member");
                        let u = self.w.users[0].clone();
                        self.send(&u, vote(honest), Want::Err(UNAUTHORIZED))?
                    }
                };
            }
        }
        Ok(())
    }

    /// Signs `ix` at the signer's next nonce and submits it, checked.
    fn send(&mut self, k: &Keypair, ix: Instruction, want: Want) -> Result<(), TestCaseError> {
        self.send_r(k, ix, want).map(|_| ())
    }

    /// As `send`, returning what the ledger answered.
    fn send_r(&mut self, k: &Keypair, ix: Instruction, want: Want) -> Result<Result<(), ProtocolError>, TestCaseError> {
        let tx = self.w.sign(k, ix);
        self.submit(&tx, want)
    }

    /// Submits `tx` and checks: the expected outcome; a refusal changes
    /// nothing; an accepted instruction cannot be replayed, advances the
    /// slot clock and moves exactly the money the oracle says; the invariants.
    fn submit(&mut self, tx: &SignedTx, want: Want) -> Result<Result<(), ProtocolError>, TestCaseError> {
        let before = self.w.ledger.clone();
        let (now, beacon) = (self.w.now, &self.w.beacon);
        let r = self.w.ledger.submit(tx, now, beacon);
        match (&r, want) {
            (_, Want::Any) | (Ok(()), Want::Ok) => {}
            (Err(e), Want::Err(code)) if e.code() == code => {}
            _ => prop_assert!(
                false,
                "{:?} by {:?} gave {:?}, expected {:?}",
                tx.ix,
                tx.signer,
                r,
                want
            ),
        }
        match &r {
            Err(e) => {
                prop_assert!((1..=12).contains(&e.code()));
                prop_assert!(
                    self.w.ledger == before,
                    "refused {:?} ({}) but the state changed",
                    tx.ix,
                    e
                );
            }
            Ok(()) => {
                let events = self.w.ledger.poll_events();
                let after = self.w.ledger.clone();
                let replay = self.w.ledger.submit(tx, now, beacon);
                prop_assert!(
                    matches!(replay, Err(ProtocolError::BadNonce { .. })),
                    "replay accepted: {:?}",
                    replay
                );
                prop_assert!(self.w.ledger == after, "a replay changed the state");
                let rb = &self.w.ledger.recent_blockhashes;
                prop_assert_eq!(rb.back(), Some(&(now / SLOT_MS, self.w.ledger.blockhash)));
                prop_assert!(rb.iter().zip(rb.iter().skip(1)).all(|(a, b)| a.0 < b.0));
                prop_assert!(rb.len() <= RECENT_BLOCKHASHES);
                let step = Step::Ix {
                    signer: tx.signer,
                    ix: &tx.ix,
                };
                self.check_step(&before, &step, &events).map_err(|e| {
                    TestCaseError::fail(format!("{e}\n  in {:?} by {:?}\n  events {events:?}", tx.ix, tx.signer))
                })?;
            }
        }
        self.invariants()?;
        Ok(r)
    }

    fn tick(&mut self) -> Result<(), TestCaseError> {
        let before = self.w.ledger.clone();
        self.w.ledger.tick(self.w.now, &self.w.beacon);
        let events = self.w.ledger.poll_events();
        self.check_step(&before, &Step::Tick, &events)
            .map_err(|e| TestCaseError::fail(format!("{e}\n  in a tick at {}\n  events {events:?}", self.w.now)))?;
        self.invariants()?;
        // Nothing is left past its deadline: every dispute has ended.
        let (l, now) = (&self.w.ledger, self.w.now);
        for &e in &l.active {
            for (i, r) in l.executions[&e].tasks.iter().enumerate() {
                match r.status {
                    TaskStatus::Assigned | TaskStatus::Challenged | TaskStatus::Disputed => prop_assert!(
                        r.deadline > now,
                        "execution {} task {} is {:?} past its deadline {} at {}",
                        e,
                        i + 1,
                        r.status,
                        r.deadline,
                        now
                    ),
                    TaskStatus::Ready => prop_assert!(r.ready_deadline.is_none_or(|d| d > now)),
                    _ => {}
                }
            }
        }
        let silence = l.params.heartbeat_ms * l.params.heartbeats_missed_max;
        for n in l.nodes.values() {
            prop_assert!(n.status != NodeStatus::Active || n.last_heartbeat + silence >= now);
        }
        Ok(())
    }

    /// What must hold in every state.
    fn invariants(&self) -> Result<(), TestCaseError> {
        let l = &self.w.ledger;
        let p = &l.params;
        prop_assert_eq!(money(l), l.supply as u128, "money is not conserved");
        // The holds are exactly what the running work gives.
        let mut load: BTreeMap<Pubkey, u32> = BTreeMap::new();
        let mut disputes: BTreeMap<Pubkey, u32> = BTreeMap::new();
        for (id, e) in &l.executions {
            prop_assert_eq!(l.active.contains(id), e.status == ExecStatus::InProgress);
            if e.status != ExecStatus::InProgress {
                prop_assert_eq!(e.escrow, 0, "a finished execution keeps escrow");
                if e.status == ExecStatus::Completed {
                    prop_assert!(e.tasks.iter().all(|r| r.status == TaskStatus::Completed));
                }
                continue;
            }
            let model = &l.models[&e.model];
            for (i, r) in e.tasks.iter().enumerate() {
                if r.status != TaskStatus::Pending {
                    for &u in &model.upstream[i] {
                        let up = e.tasks[u as usize - 1].status;
                        prop_assert!(
                            matches!(
                                up,
                                TaskStatus::Completed | TaskStatus::Challenged | TaskStatus::Disputed
                            ),
                            "execution {} task {} is {:?} while its upstream task {} is {:?} (no output)",
                            id,
                            i + 1,
                            r.status,
                            u,
                            up
                        );
                    }
                }
                let hold = |m: &mut BTreeMap<Pubkey, u32>, k: Option<Pubkey>| {
                    *m.entry(k.expect("a holder")).or_default() += 1;
                };
                match r.status {
                    TaskStatus::Assigned => hold(&mut load, r.node),
                    TaskStatus::Challenged => {
                        prop_assert!(r.validator.is_some(), "challenged without a validator");
                        hold(&mut load, r.node);
                        if r.validator_commitment.is_none() {
                            hold(&mut load, r.validator);
                        }
                    }
                    TaskStatus::Disputed => {
                        hold(&mut load, r.node);
                        hold(&mut disputes, r.node);
                        if r.validator.is_some() {
                            hold(&mut disputes, r.validator);
                        }
                        let set: BTreeSet<&Pubkey> = r.committee.iter().collect();
                        prop_assert_eq!(set.len(), r.committee.len(), "a member drawn twice");
                        prop_assert!(r.committee.len() <= p.committee_size as usize);
                        prop_assert!(!set.contains(&r.node.unwrap()));
                        prop_assert!(r.validator.is_none_or(|v| !set.contains(&v)));
                        for m in &r.committee {
                            hold(&mut disputes, Some(*m));
                        }
                    }
                    _ => {}
                }
            }
        }
        for (k, n) in &l.nodes {
            prop_assert_eq!(n.load, load.get(k).copied().unwrap_or(0), "load of {:?}", k);
            prop_assert_eq!(n.disputes, disputes.get(k).copied().unwrap_or(0), "disputes of {:?}", k);
            prop_assert!(n.load <= p.node_load_max, "{:?} holds {} tasks", k, n.load);
            prop_assert!(n.unstaking.is_none_or(|u| u.0 <= n.stake));
            for key in &n.supports {
                prop_assert!(l.candidates.get(key).is_some_and(|c| c.contains(k)));
            }
        }
        for (key, c) in &l.candidates {
            prop_assert!(c.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(c.iter().all(|k| l.nodes[k].supports.contains(key)));
        }
        Ok(())
    }

    /// Why `node` may not take or judge task `t` of execution `e` now, by
    /// the published rules, or None. `stake`: its stake at that moment.
    /// (The load limit is not here: `invariants` checks it in every state.)
    fn ineligible(&self, before: &Ledger, node: &Pubkey, stake: u128, e: u64, t: u32) -> Option<String> {
        let l = &self.w.ledger;
        let p = &l.params;
        let n = l.nodes.get(node)?;
        let ex = &l.executions[&e];
        let def = &l.models[&ex.model].def.tasks[t as usize - 1];
        let unstaking = before
            .nodes
            .get(node)
            .and_then(|n| n.unstaking)
            .map_or(0, |u| u.0 as u128);
        let free = stake - unstaking.min(stake);
        let cost = oracle::task_cost(p, def);
        if n.status != NodeStatus::Active {
            Some("not active".into())
        } else if !n.supports.contains(&(ex.model, t)) {
            Some("does not support the task".into())
        } else if n.vram < def.vram {
            Some("too little VRAM".into())
        } else if free < oracle::stake_required(p, n.vram) {
            Some(format!("free stake {free} below {}", oracle::stake_required(p, n.vram)))
        } else if !oracle::secure(p, cost, oracle::slash(p, cost, stake as u64).min(free)) {
            Some("p(1-r)(R+S) <= C".into())
        } else if ex.tasks[t as usize - 1].excluded.contains(node) {
            Some("excluded from the task".into())
        } else {
            None
        }
    }

    /// The dispute on (e, t) as it stood before this step, with the vote
    /// this step cast (if it is one).
    fn dispute_before(before: &Ledger, step: &Step, e: u64, t: u32) -> Option<Dispute> {
        let ex = before.executions.get(&e)?;
        let r = ex.tasks.get(t as usize - 1)?;
        if ex.status != ExecStatus::InProgress || r.status != TaskStatus::Disputed {
            return None;
        }
        let mut votes = r.votes.clone();
        if let Step::Ix {
            signer,
            ix:
                Instruction::DisputeVote {
                    execution,
                    task,
                    asserter_honest,
                    validator_honest,
                },
        } = step
        {
            if (*execution, *task) == (e, t) {
                votes.insert(*signer, (*asserter_honest, *validator_honest));
            }
        }
        Some(Dispute {
            asserter: r.node.unwrap(),
            validator: r.validator,
            revealed: r.validator_commitment.is_some(),
            committee: r.committee.clone(),
            votes,
            deadline: r.deadline,
            fresh: false,
        })
    }

    /// The oracle for one step: replays its money movements from the
    /// published formulas on a shadow of every balance, stake, escrow and
    /// the treasury, judges every dispute that ended again, checks every
    /// assignment, validator and committee against the eligibility rules,
    /// and counts the paths taken.
    fn check_step(&mut self, before: &Ledger, step: &Step, events: &[Event]) -> Result<(), TestCaseError> {
        let after = &self.w.ledger;
        let p = after.params.clone();
        let now = self.w.now;
        let mut c = std::mem::take(&mut self.counts);
        let cost_of = |e: u64, t: u32| {
            let m = after.executions[&e].model;
            oracle::task_cost(&p, &after.models[&m].def.tasks[t as usize - 1])
        };
        let mut bal: BTreeMap<Pubkey, i128> = before.accounts.iter().map(|(k, a)| (*k, a.balance as i128)).collect();
        let mut stake: BTreeMap<Pubkey, i128> = before.nodes.iter().map(|(k, n)| (*k, n.stake as i128)).collect();
        let mut escrow: BTreeMap<u64, i128> = before.executions.iter().map(|(k, e)| (*k, e.escrow as i128)).collect();
        let (mut treasury, mut supply) = (before.treasury as i128, before.supply as i128);
        // Outflows that would be cut short if the treasury or an escrow ran dry.
        let mut treasury_out: i128 = 0;
        let mut escrow_out: BTreeMap<u64, i128> = BTreeMap::new();
        let mut paid: BTreeMap<(u64, u32), bool> = BTreeMap::new();
        let paid0 = |e: u64, t: u32| {
            before
                .executions
                .get(&e)
                .and_then(|x| x.tasks.get(t as usize - 1))
                .is_some_and(|r| r.paid)
        };
        // Slashes: the uncapped amounts the verdicts call for, per node, and what was taken.
        let mut owed: BTreeMap<Pubkey, u128> = BTreeMap::new();
        let mut taken: BTreeMap<Pubkey, u128> = BTreeMap::new();
        let mut slash_of: BTreeMap<(Pubkey, u64, u32), u128> = BTreeMap::new();
        // (role, node, execution, task) of each slash the verdicts call for.
        let mut roles: Vec<(&'static str, Pubkey, u64, u32)> = Vec::new();

        // The instruction's own movements.
        if let Step::Ix { signer, ix } = step {
            let s = *signer;
            let sub = |m: &mut BTreeMap<Pubkey, i128>, k: Pubkey, x: i128| *m.entry(k).or_default() += x;
            match ix {
                Instruction::Mint { to, amount } => {
                    sub(&mut bal, *to, *amount as i128);
                    supply += *amount as i128;
                }
                Instruction::Transfer { to, amount } if *to != s => {
                    sub(&mut bal, s, -(*amount as i128));
                    sub(&mut bal, *to, *amount as i128);
                }
                Instruction::RegisterModel(def) => {
                    let fee = oracle::model_fee(&p, def.tasks.len()) as i128;
                    sub(&mut bal, s, -fee);
                    treasury += fee;
                    count(&mut c, "model registered");
                }
                Instruction::RegisterNode { vram, .. } if !before.nodes.contains_key(&s) => {
                    prop_assert!(before.balance(&s) as u128 >= oracle::stake_required(&p, *vram));
                }
                Instruction::Stake { amount } => {
                    sub(&mut bal, s, -(*amount as i128));
                    sub(&mut stake, s, *amount as i128);
                }
                Instruction::Withdraw => {
                    let n = &before.nodes[&s];
                    let a = n.unstaking.unwrap().0.min(n.stake) as i128;
                    sub(&mut bal, s, a);
                    sub(&mut stake, s, -a);
                }
                Instruction::SubmitExecution { model, priority, .. } => {
                    let e = oracle::escrow(&p, &before.models[model].def) as i128;
                    let fee = oracle::execution_fee(&p, *priority) as i128;
                    sub(&mut bal, s, -(e + fee));
                    treasury += fee;
                    escrow.insert(before.next_execution, e);
                    let submitted = Event::ExecutionSubmitted {
                        execution: before.next_execution,
                        escrow: e as u64,
                    };
                    prop_assert!(events.contains(&submitted), "the escrow is not {}", e);
                }
                _ => {}
            }
        }
        let stake_at_start = stake.clone();

        // Which tasks hold which nodes (a validator holds none of its execution's).
        let mut holder: BTreeMap<(u64, u32), Pubkey> = BTreeMap::new();
        for (e, x) in &before.executions {
            for (i, r) in x.tasks.iter().enumerate() {
                if let Some(n) = r.node {
                    holder.insert((*e, i as u32 + 1), n);
                }
            }
        }
        // A report by the `unrunnable_reports`-th distinct node fails the execution.
        let mut unrunnable = None;
        if let Step::Ix {
            signer,
            ix: Instruction::ReportUnrunnable { execution, task, .. },
        } = step
        {
            let mut reporters = before.executions[execution].tasks[*task as usize - 1]
                .unrunnable
                .clone();
            if !reporters.contains(signer) {
                reporters.push(*signer);
            }
            if reporters.len() >= p.unrunnable_reports.max(1) as usize {
                let failed = events
                    .iter()
                    .any(|x| matches!(x, Event::ExecutionFailed { execution: e, .. } if e == execution));
                prop_assert!(
                    failed,
                    "{} nodes reported {}/{} unrunnable",
                    reporters.len(),
                    execution,
                    task
                );
                unrunnable = Some((*execution, *task, reporters));
            }
        }
        let mut fresh: BTreeMap<(u64, u32), Dispute> = BTreeMap::new();
        let mut ended: BTreeSet<(u64, u32)> = BTreeSet::new();

        for (i, ev) in events.iter().enumerate() {
            let later = &events[i + 1..];
            match ev {
                Event::Slashed {
                    node,
                    amount,
                    execution,
                    task,
                } => {
                    prop_assert!(*amount > 0);
                    *stake.get_mut(node).unwrap() -= *amount as i128;
                    treasury += *amount as i128;
                    *taken.entry(*node).or_default() += *amount as u128;
                    *slash_of.entry((*node, *execution, *task)).or_default() += *amount as u128;
                }
                Event::Assigned {
                    execution: e,
                    task: t,
                    node,
                    deadline,
                    attempt,
                } => {
                    let why = self.ineligible(before, node, stake[node] as u128, *e, *t);
                    prop_assert!(why.is_none(), "{:?} assigned {}/{}: {:?}", node, e, t, why);
                    let r = &after.executions[e].tasks[*t as usize - 1];
                    if r.node == Some(*node) && r.attempts == *attempt {
                        let m = after.executions[e].model;
                        let def = &after.models[&m].def.tasks[*t as usize - 1];
                        prop_assert_eq!(*deadline as u128, now as u128 + oracle::timeout(&p, def, r.failures));
                    }
                    holder.insert((*e, *t), *node);
                }
                Event::ValidatorAssigned {
                    execution: e,
                    task: t,
                    validator,
                    deadline,
                } => {
                    let why = self.ineligible(before, validator, stake[validator] as u128, *e, *t);
                    prop_assert!(why.is_none(), "{:?} validates {}/{}: {:?}", validator, e, t, why);
                    prop_assert!(
                        !holder.iter().any(|((x, _), n)| x == e && n == validator),
                        "the validator of {}/{} holds a task of that execution",
                        e,
                        t
                    );
                    let m = after.executions[e].model;
                    let def = &after.models[&m].def.tasks[*t as usize - 1];
                    prop_assert_eq!(*deadline as u128, now as u128 + oracle::timeout(&p, def, 0));
                    if Self::was(before, *e, *t, TaskStatus::Challenged) {
                        count(&mut c, "validator replaced");
                    }
                }
                Event::Drawn {
                    execution: e,
                    task: t,
                    challenged,
                    validator,
                    proof,
                } => {
                    let Step::Ix {
                        ix: Instruction::SubmitResult { commitment, .. },
                        ..
                    } = step
                    else {
                        return Err(TestCaseError::fail("a draw outside a result"));
                    };
                    let alpha = [
                        &before.blockhash[..],
                        &e.to_le_bytes()[..],
                        &t.to_le_bytes()[..],
                        &commitment[..],
                    ]
                    .concat();
                    let beta = vrf_verify(&before.beacon, &alpha, proof);
                    prop_assert!(beta.is_some(), "the draw's proof does not verify");
                    let x = u64::from_le_bytes(beta.unwrap()[..8].try_into().unwrap()) % PPM;
                    prop_assert_eq!(*challenged, x < p.challenge_ppm, "the challenge is not the VRF's");
                    prop_assert!(*challenged || validator.is_none());
                    count(
                        &mut c,
                        if *challenged {
                            "challenge drawn"
                        } else {
                            "not challenged"
                        },
                    );
                    if *challenged && validator.is_none() {
                        count(&mut c, "no validator eligible -> committee");
                    }
                }
                Event::Disputed {
                    execution: e,
                    task: t,
                    asserter,
                    validator,
                    committee,
                    deadline,
                } => {
                    prop_assert_eq!(*deadline, now + p.dispute_ms);
                    let set: BTreeSet<&Pubkey> = committee.iter().collect();
                    prop_assert_eq!(set.len(), committee.len());
                    prop_assert!(!set.contains(asserter) && validator.is_none_or(|v| !set.contains(&v)));
                    let mut eligible = 0;
                    for k in after.nodes.keys() {
                        if k == asserter || Some(*k) == *validator {
                            continue;
                        }
                        let why = self.ineligible(before, k, stake[k] as u128, *e, *t);
                        if set.contains(k) {
                            prop_assert!(why.is_none(), "{:?} judges {}/{}: {:?}", k, e, t, why);
                        }
                        eligible += why.is_none() as usize;
                    }
                    prop_assert_eq!(
                        committee.len(),
                        eligible.min(p.committee_size as usize),
                        "the committee is not as large as the eligible nodes allow"
                    );
                    if validator.is_none() && Self::was(before, *e, *t, TaskStatus::Challenged) {
                        count(&mut c, "validators exhausted -> committee");
                    }
                    fresh.insert(
                        (*e, *t),
                        Dispute {
                            asserter: *asserter,
                            validator: *validator,
                            revealed: validator.is_some(),
                            committee: committee.clone(),
                            votes: BTreeMap::new(),
                            deadline: *deadline,
                            fresh: true,
                        },
                    );
                }
                Event::TaskCompleted {
                    execution: e,
                    task: t,
                    node,
                } => {
                    let in_dispute = later.iter().any(
                        |x| matches!(x, Event::DisputeEnded { execution, task, .. } if (execution, task) == (e, t)),
                    );
                    if in_dispute {
                        continue;
                    }
                    if let Step::Ix {
                        signer,
                        ix: Instruction::RevealValidation { execution, task, .. },
                    } = step
                    {
                        prop_assert_eq!((execution, task), (e, t));
                        let r = oracle::verification_reward(&p, cost_of(*e, *t)) as i128;
                        *bal.entry(*signer).or_default() += r;
                        *escrow.get_mut(e).unwrap() -= r;
                        *escrow_out.entry(*e).or_default() += r;
                    }
                    let was_paid = *paid.entry((*e, *t)).or_insert(paid0(*e, *t));
                    if !was_paid {
                        let cost = cost_of(*e, *t) as i128;
                        *bal.entry(*node).or_default() += cost;
                        *escrow.get_mut(e).unwrap() -= cost;
                        *escrow_out.entry(*e).or_default() += cost;
                        paid.insert((*e, *t), true);
                    }
                }
                Event::Invalidated { execution: e, task: k } => {
                    holder.remove(&(*e, *k));
                    if *paid.entry((*e, *k)).or_insert(paid0(*e, *k)) {
                        // Work already paid for is refunded to the escrow from the treasury.
                        let cost = cost_of(*e, *k) as i128;
                        treasury -= cost;
                        treasury_out += cost;
                        *escrow.get_mut(e).unwrap() += cost;
                        paid.insert((*e, *k), false);
                    }
                    let own = later.iter().any(
                        |x| matches!(x, Event::DisputeEnded { execution, task, .. } if (execution, task) == (e, k)),
                    );
                    if !own {
                        count(&mut c, "downstream invalidated");
                    }
                }
                Event::DisputeEnded {
                    execution: e, task: t, ..
                } => {
                    let (e, t) = (*e, *t);
                    ended.insert((e, t));
                    let d = match fresh.remove(&(e, t)) {
                        Some(d) => d,
                        None => Self::dispute_before(before, step, e, t)
                            .ok_or_else(|| TestCaseError::fail(format!("{e}/{t} ended but was not in dispute")))?,
                    };
                    let need = oracle::majority(p.committee_size as usize);
                    let (a, v) = verdict(&p, &d);
                    let all = d.votes.len() >= d.committee.len();
                    let at_deadline = matches!(step, Step::Tick) && !d.fresh;
                    if d.fresh {
                        prop_assert!(
                            d.committee.len() < need,
                            "a dispute with {} judges ended at once",
                            d.committee.len()
                        );
                        count(&mut c, "undecided: committee too small");
                    } else if at_deadline {
                        prop_assert!(d.deadline <= now, "a dispute ended before its deadline");
                        count(
                            &mut c,
                            if a.is_some() {
                                "decided at deadline"
                            } else {
                                "undecided at deadline"
                            },
                        );
                    } else {
                        let voted = matches!(step, Step::Ix { ix: Instruction::DisputeVote { execution, task, .. }, .. } if (*execution, *task) == (e, t));
                        prop_assert!(voted, "{}/{} ended outside a vote or a tick", e, t);
                        prop_assert!(a.is_some() || all, "ended undecided before everyone voted");
                        if a.is_none() {
                            count(&mut c, "undecided: all voted, no majority");
                        }
                    }
                    let outcome = match a {
                        Some(true) => {
                            later
                                .iter()
                                .chain(events[..i].iter())
                                .any(|x| matches!(x, Event::TaskCompleted { execution, task, .. } if (*execution, *task) == (e, t)))
                        }
                        Some(false) => events[..i]
                            .iter()
                            .any(|x| matches!(x, Event::Invalidated { execution, task } if (*execution, *task) == (e, t))),
                        None => later
                            .iter()
                            .any(|x| matches!(x, Event::ExecutionFailed { execution, .. } if *execution == e)),
                    };
                    prop_assert!(outcome, "{}/{}: the ledger did not carry out the verdict {:?}", e, t, a);
                    if at_deadline {
                        for m in d.committee.iter().filter(|m| !d.votes.contains_key(m)) {
                            *owed.entry(*m).or_default() += p.absent_penalty as u128;
                            roles.push(("absent member penalised", *m, e, t));
                        }
                    }
                    let Some(a) = a else {
                        continue;
                    };
                    let cost = cost_of(e, t);
                    count(
                        &mut c,
                        if a {
                            "dispute: asserter honest"
                        } else {
                            "dispute: asserter dishonest"
                        },
                    );
                    for (m, vote) in &d.votes {
                        if vote.0 == Some(a) {
                            let r = oracle::committee_reward(&p, cost) as i128;
                            *bal.entry(*m).or_default() += r;
                            treasury -= r;
                            treasury_out += r;
                        } else if vote.0 == Some(!a) {
                            *owed.entry(*m).or_default() += oracle::slash_uncapped(&p, cost);
                            roles.push(("committee member slashed", *m, e, t));
                        }
                    }
                    let half = |k: Pubkey| slash_of.get(&(k, e, t)).copied().unwrap_or(0) as i128 / 2;
                    if !a {
                        *owed.entry(d.asserter).or_default() += oracle::slash_uncapped(&p, cost);
                        roles.push(("asserter slashed", d.asserter, e, t));
                        if v == Some(true) {
                            let h = half(d.asserter);
                            *bal.entry(d.validator.unwrap()).or_default() += h;
                            treasury -= h;
                        }
                    }
                    match v {
                        Some(false) => {
                            let vk = d.validator.unwrap();
                            *owed.entry(vk).or_default() += oracle::slash_uncapped(&p, cost);
                            roles.push(("validator slashed", vk, e, t));
                            if a {
                                let h = half(vk);
                                *bal.entry(d.asserter).or_default() += h;
                                treasury -= h;
                            }
                        }
                        Some(true) => {
                            let r = oracle::verification_reward(&p, cost) as i128;
                            *bal.entry(d.validator.unwrap()).or_default() += r;
                            *escrow.get_mut(&e).unwrap() -= r;
                            *escrow_out.entry(e).or_default() += r;
                        }
                        None => {}
                    }
                    if a && !*paid.entry((e, t)).or_insert(paid0(e, t)) {
                        let cost = cost as i128;
                        *bal.entry(d.asserter).or_default() += cost;
                        *escrow.get_mut(&e).unwrap() -= cost;
                        *escrow_out.entry(e).or_default() += cost;
                        paid.insert((e, t), true);
                    }
                }
                Event::ExecutionCompleted { execution: e } | Event::ExecutionFailed { execution: e, .. } => {
                    if let (Event::ExecutionFailed { .. }, Some((x, task, reporters))) = (ev, &unrunnable) {
                        // The owner pays each reporter the task's cost, as far as its balance goes.
                        prop_assert_eq!(x, e);
                        let owner = after.models[&after.executions[e].model].owner;
                        for rep in reporters {
                            let pay = (cost_of(*e, *task) as i128).min(bal[&owner]);
                            *bal.get_mut(&owner).unwrap() -= pay;
                            *bal.entry(*rep).or_default() += pay;
                        }
                    }
                    let user = after.executions[e].user;
                    let rest = escrow.insert(*e, 0).unwrap();
                    *bal.entry(user).or_default() += rest;
                    if let Event::ExecutionCompleted { .. } = ev {
                        count(&mut c, "execution completed");
                    } else {
                        let x = &after.executions[e];
                        let why = if ended.iter().any(|(y, _)| y == e) {
                            "failed: undecided dispute"
                        } else if unrunnable.is_some() {
                            "failed: unrunnable"
                        } else if x
                            .tasks
                            .iter()
                            .any(|r| r.status == TaskStatus::Ready && r.attempts >= p.attempts_max)
                        {
                            "failed: attempts exhausted"
                        } else if x.tasks.iter().any(|r| r.ready_deadline.is_some_and(|d| d <= now)) {
                            "failed: no eligible node"
                        } else {
                            return Err(TestCaseError::fail(format!("execution {e} failed for no known reason")));
                        };
                        count(&mut c, why);
                    }
                }
                Event::TimedOut { .. } => count(&mut c, "task timed out"),
                Event::NodeUnresponsive { .. } => count(&mut c, "node unresponsive"),
                Event::Unrunnable { .. } => count(&mut c, "unrunnable reported"),
                Event::Released { .. } => count(&mut c, "work handed back on leaving"),
                _ => {}
            }
        }

        // Reveals: a match completes the task, a mismatch goes to the committee.
        if let Step::Ix {
            ix:
                Instruction::RevealValidation {
                    execution,
                    task,
                    commitment,
                    ..
                },
            ..
        } = step
        {
            let matched = before.executions[execution].tasks[*task as usize - 1].commitment == Some(*commitment);
            let disputed = events
                .iter()
                .any(|x| matches!(x, Event::Disputed { execution: e, task: t, .. } if (e, t) == (execution, task)));
            prop_assert_eq!(matched, !disputed);
            count(
                &mut c,
                if matched {
                    "validator matched"
                } else {
                    "reveal mismatch -> dispute"
                },
            );
            if matched && *commitment != truth(*execution, *task) {
                count(
                    &mut c,
                    "validator copied a forged result (paid: the seal is the shell's check)",
                );
            }
        }
        // The last vote ends the dispute at once (not an earlier majority: a
        // member still re-executing is never shut out).
        if let Step::Ix {
            ix: Instruction::DisputeVote { execution, task, .. },
            ..
        } = step
        {
            if !ended.contains(&(*execution, *task)) {
                let d = Self::dispute_before(before, step, *execution, *task).unwrap();
                let (a, v) = verdict(&p, &d);
                let all = d.votes.len() >= d.committee.len();
                let _ = (a, v);
                prop_assert!(
                    !all,
                    "{}/{}: the votes decide ({:?}, {:?}) but the dispute goes on",
                    execution,
                    task,
                    a,
                    v
                );
            }
        }

        // Slashes: per node, min(Σ what the verdicts call for, its stake).
        for (k, s0) in &stake_at_start {
            let want = owed.get(k).copied().unwrap_or(0).min(*s0 as u128);
            let got = taken.get(k).copied().unwrap_or(0);
            prop_assert_eq!(
                got,
                want,
                "{:?} lost {} of stake, the verdicts call for {}",
                k,
                got,
                want
            );
        }
        for (role, k, e, t) in roles {
            if slash_of.contains_key(&(k, e, t)) {
                count(&mut c, role);
            }
        }
        for (k, n) in &after.nodes {
            prop_assert_eq!(n.stake as i128, stake.get(k).copied().unwrap_or(0), "stake of {:?}", k);
        }
        prop_assert_eq!(after.supply as i128, supply);
        // Balances, escrows and the treasury: exact unless a payment from the
        // treasury or an escrow could have been cut short.
        let ample = treasury_out <= before.treasury as i128
            && escrow_out
                .iter()
                .all(|(e, o)| *o <= before.executions.get(e).map_or(0, |x| x.escrow as i128));
        if ample {
            for k in after.accounts.keys().chain(bal.keys()) {
                prop_assert_eq!(
                    after.balance(k) as i128,
                    bal.get(k).copied().unwrap_or(0),
                    "balance of {:?} after {}",
                    k,
                    match step {
                        Step::Tick => "a tick".to_string(),
                        Step::Ix { ix, .. } => format!("{ix:?}"),
                    }
                );
            }
            for (e, x) in &after.executions {
                prop_assert_eq!(x.escrow as i128, escrow.get(e).copied().unwrap_or(0), "escrow of {}", e);
            }
            prop_assert_eq!(after.treasury as i128, treasury, "treasury");
            if !events.is_empty() || matches!(step, Step::Ix { .. }) {
                count(&mut c, "settlement checked exactly");
            }
        } else {
            count(&mut c, "settlement not checked (treasury or escrow short)");
        }
        self.counts = c;
        Ok(())
    }

    fn was(l: &Ledger, e: u64, t: u32, s: TaskStatus) -> bool {
        l.executions
            .get(&e)
            .and_then(|x| x.tasks.get(t as usize - 1))
            .is_some_and(|r| r.status == s)
    }

    /// Everyone honest and live until every execution has finished: none
    /// is lost (each completes or fails within a bounded time).
    fn drive(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..300 {
            if self.w.ledger.active.is_empty() {
                return Ok(());
            }
            for k in self.w.nodes.clone() {
                self.send(&k, Instruction::Heartbeat, Want::Ok)?;
            }
            for _ in 0..8 {
                let list = duties(&self.w.ledger);
                if list.is_empty() {
                    break;
                }
                for d in list {
                    let (e, t) = match d {
                        Duty::Assert(e, t, _) | Duty::Seal(e, t, _) | Duty::Reveal(e, t, _) | Duty::Vote(e, t, _) => {
                            (e, t)
                        }
                    };
                    let l = &self.w.ledger;
                    if l.executions[&e].status != ExecStatus::InProgress {
                        continue;
                    }
                    let r = &l.executions[&e].tasks[t as usize - 1];
                    let c = truth(e, t);
                    let (who, ix) = match d {
                        Duty::Assert(..) if r.status == TaskStatus::Assigned => (
                            r.node.unwrap(),
                            Instruction::SubmitResult {
                                execution: e,
                                task: t,
                                commitment: c,
                                output_uris: uris(&c),
                            },
                        ),
                        Duty::Seal(_, _, v) if r.validator == Some(v) && r.validator_seal.is_none() => (
                            v,
                            Instruction::SubmitValidation {
                                execution: e,
                                task: t,
                                seal: validation_seal(&v, e, t, &c),
                            },
                        ),
                        Duty::Reveal(_, _, v) if r.validator == Some(v) && r.validator_commitment.is_none() => (
                            v,
                            Instruction::RevealValidation {
                                execution: e,
                                task: t,
                                commitment: c,
                                output_uris: uris(&c),
                            },
                        ),
                        Duty::Vote(_, _, m)
                            if r.status == TaskStatus::Disputed
                                && !r.votes.contains_key(&m)
                                && self.w.now < r.deadline =>
                        {
                            (
                                m,
                                Instruction::DisputeVote {
                                    execution: e,
                                    task: t,
                                    asserter_honest: Some(r.commitment == Some(c)),
                                    validator_honest: r.validator_commitment.map(|x| x == c),
                                },
                            )
                        }
                        _ => continue,
                    };
                    let k = self.w.key_of(&who);
                    self.send(&k, ix, Want::Ok)?;
                }
            }
            let now = self.w.now;
            self.w.now = self.w.ledger.poll_timeout().unwrap_or(now + 1_000).max(now + 1);
            self.tick()?;
        }
        prop_assert!(
            self.w.ledger.active.is_empty(),
            "executions {:?} still running after 300 rounds of honest work",
            self.w.ledger.active
        );
        Ok(())
    }
}

fn run_case(setup: &Setup, ops: &[Op]) -> Result<Counts, TestCaseError> {
    let mut s = Sim::new(setup)?;
    for op in ops {
        s.step(op)?;
    }
    s.drive()?;
    // A snapshot restores exactly the state it was taken from.
    let restored = Ledger::restore(&s.w.ledger.snapshot()).map_err(TestCaseError::fail)?;
    prop_assert!(restored == s.w.ledger, "a snapshot did not restore the same state");
    Ok(s.counts)
}

/// The random sequences, with every invariant and oracle above checked at
/// every step; then the counts of the paths reached, which must all be
/// positive (the generators are biased so that each is reached many times
/// within the default number of cases).
#[test]
fn random_sequences_keep_the_rules_and_reach_every_path() {
    let total = Mutex::new(Counts::new());
    // The path counts need the default number of cases at least (more may
    // be asked for with PROPTEST_CASES).
    let mut runner = TestRunner::new(Config {
        cases: Config::default().cases.max(256),
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    });
    let cases = runner.config().cases;
    let strategy = (setup(), proptest::collection::vec(op(), 1..200));
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |(setup, ops)| {
        let c = run_case(&setup, &ops)?;
        let mut t = total.lock().unwrap();
        for (k, v) in c {
            *t.entry(k).or_default() += v;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = total.into_inner().unwrap();
    println!(
        "paths reached in {cases} cases ({:.1} s):",
        started.elapsed().as_secs_f64()
    );
    for (k, v) in &t {
        let mark = if REQUIRED.contains(k) { "*" } else { " " };
        println!("  {mark} {v:>7}  {k}");
    }
    let missing: Vec<&&str> = REQUIRED
        .iter()
        .filter(|k| t.get(*k).copied().unwrap_or(0) == 0)
        .collect();
    assert!(missing.is_empty(), "paths never reached: {missing:?}");
}

/// The body of a real snapshot of a busy ledger (models, nodes, executions,
/// a dispute), built once.
fn busy_snapshot() -> &'static [u8] {
    static S: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let mut w = World::new(
            Params {
                challenge_ppm: PPM,
                ..Params::default()
            },
            5,
            6,
        )
        .unwrap();
        let m = w.register_model(chain(&[(500, GB), (800, 2 * GB)]));
        for i in 0..6 {
            w.add_node(i, 8 * GB, 3_000 * USDC, vec![(m, 1), (m, 2)]);
        }
        let e = w.submit(0, m);
        w.result(e, 1, forged(e, 1, 0)).unwrap();
        w.validate(e, 1, truth(e, 1)).unwrap();
        w.submit(1, m);
        w.ledger.poll_events();
        assert_eq!(w.run(e, 1).status, TaskStatus::Disputed);
        w.ledger.snapshot()
    })
}

const TAG_AND_HASH: usize = b"splitup-ledger-snapshot-v1\0".len() + 32;

/// A snapshot of `body` with a valid tag and hash: only the decoder can refuse it.
fn reseal(body: &[u8]) -> Vec<u8> {
    let mut s = busy_snapshot()[..TAG_AND_HASH - 32].to_vec();
    s.extend_from_slice(blake3::hash(body).as_bytes());
    s.extend_from_slice(body);
    s
}

#[derive(Clone, Debug)]
enum Damage {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    /// A length or count set absurdly high (a varint of ten bytes).
    HugeVarint(Index),
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Damage::Insert(i, b)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Damage::Remove(i, n)),
        any::<Index>().prop_map(Damage::HugeVarint),
        proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Damage::Garbage),
    ]
}

proptest! {
    /// Damaged snapshot bodies under a valid hash reach the postcard decoder:
    /// an error that says so (never "damaged", never a panic), or a ledger
    /// that snapshots and restores as itself. A body cut short is always refused.
    #[test]
    fn resealed_damaged_snapshots_reach_the_decoder(damages in proptest::collection::vec(damage(), 1..4)) {
        let mut body = busy_snapshot()[TAG_AND_HASH..].to_vec();
        let mut cut = false;
        for d in &damages {
            let n = body.len();
            match d {
                Damage::Truncate(i) if n > 0 => {
                    body.truncate(i.index(n));
                    cut = true;
                }
                Damage::Flip(i, x) if n > 0 => body[i.index(n)] ^= x,
                Damage::Insert(i, b) => {
                    let at = i.index(n + 1);
                    body.splice(at..at, b.iter().copied());
                    cut = false;
                }
                Damage::Remove(i, k) if n > 0 => {
                    let at = i.index(n);
                    body.drain(at..(at + k).min(n));
                }
                Damage::HugeVarint(i) => {
                    let at = i.index(n + 1);
                    body.splice(at..at, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
                    cut = false;
                }
                Damage::Garbage(g) => {
                    body = g.clone();
                    cut = false;
                }
                _ => {}
            }
        }
        match Ledger::restore(&reseal(&body)) {
            Err(e) => prop_assert!(e.contains("unreadable"), "the decoder was not reached: {}", e),
            Ok(l) => {
                prop_assert!(!cut || damages.len() > 1, "a body cut short was read");
                let again = Ledger::restore(&l.snapshot()).map_err(TestCaseError::fail)?;
                prop_assert!(again == l);
            }
        }
    }

    /// Arbitrary bytes as a `POST /v1/tx` body: an error or a submission
    /// that keeps the invariants, never a panic.
    #[test]
    fn hostile_tx_bodies_never_panic(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(prop::sample::select(JSONISH), 0..512),
    ]) {
        if let Ok(tx) = serde_json::from_slice::<SignedTx>(&bytes) {
            let mut w = World::new(Params::default(), 9, 3).unwrap();
            let before = w.ledger.clone();
            if w.ledger.submit(&tx, w.now, &w.beacon).is_err() {
                prop_assert!(w.ledger == before);
            }
            prop_assert_eq!(money(&w.ledger), w.ledger.supply as u128);
        }
    }
}

/// Every strict prefix of a real snapshot body, resealed, is refused by
/// the decoder; the whole body is read back as the same ledger.
#[test]
fn every_cut_of_a_snapshot_body_is_refused_by_the_decoder() {
    let s = busy_snapshot();
    let body = &s[TAG_AND_HASH..];
    let whole = Ledger::restore(&reseal(body)).unwrap();
    assert!(Ledger::restore(s).unwrap() == whole);
    assert_eq!(whole.snapshot(), s, "a snapshot is canonical");
    for n in 0..body.len() {
        let e = Ledger::restore(&reseal(&body[..n])).unwrap_err();
        assert!(e.contains("unreadable"), "{n} bytes: {e}");
    }
}

#[test]
fn a_damaged_snapshot_is_refused_by_its_hash() {
    let mut s = busy_snapshot().to_vec();
    let n = s.len();
    s[n - 3] ^= 1;
    assert!(Ledger::restore(&s).unwrap_err().contains("damaged"));
    assert!(Ledger::restore(b"junk").unwrap_err().contains("not a ledger snapshot"));
    assert!(Ledger::restore(&s[..TAG_AND_HASH - 1])
        .unwrap_err()
        .contains("truncated"));
}

proptest! {
    /// A model's tolerances are f64 and travel as JSON inside a signed
    /// instruction: every value must come back bit for bit, or the
    /// signature (over the instruction's JSON) no longer verifies and the deploy
    /// is refused (found by the demo: serde_json's default parser can be
    /// one ulp off; the workspace enables `float_roundtrip`).
    #[test]
    fn signed_tolerances_survive_json(rtol in 0.0f64..=1.0, atol in 0.0f64..1e12, miss in 0.0f64..=0.5) {
        let mut def = chain(&[(1, 1)]);
        def.tasks[0].checks[0] = OutputCheck { rtol, atol, miss_rate: miss, ..def.tasks[0].checks[0].clone() };
        let key = Keypair::from_seed([7; 32]);
        let tx = SignedTx::sign(&key, 0, Instruction::RegisterModel(def));
        let back: SignedTx = serde_json::from_str(&serde_json::to_string(&tx).unwrap()).unwrap();
        let c = match &back.ix { Instruction::RegisterModel(d) => d.tasks[0].checks[0].clone(), _ => unreachable!() };
        prop_assert_eq!((c.rtol.to_bits(), c.atol.to_bits(), c.miss_rate.to_bits()), (rtol.to_bits(), atol.to_bits(), miss.to_bits()));
        let msg = SignedTx::message(&back.signer, back.nonce, &back.ix);
        prop_assert!(splitup_protocol::crypto::verify_signature(&back.signer, &msg, &back.signature));
    }
}
