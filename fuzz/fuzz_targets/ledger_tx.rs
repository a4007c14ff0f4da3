//! The ledger's transaction path on hostile input: `POST /v1/tx` decodes the
//! body as a `SignedTx` (JSON) and calls `Ledger::submit`. Random bytes
//! rarely carry a valid signature, so the same input is read three ways:
//!
//! 1. as a `SignedTx`, submitted as it is (signature, nonce, rules);
//! 2. as a `SignedTx` or a bare `Instruction`, re-signed by a known key at
//!    its next nonce, so the JSON-decoded instruction reaches the rules;
//! 3. structurally (libFuzzer's `arbitrary`): a sequence of instructions from
//!    known keys (the mint authority, the committee, funded and staked nodes,
//!    the user of a running execution) with clock advances and ticks in
//!    between. The first goes through `submit` (signed), the rest through
//!    `apply_verified` (the signature is not what they exercise).
//!
//! After every instruction: money is conserved (Σ balances + Σ stakes +
//! Σ escrows + treasury = supply) and a rejected instruction changed
//! nothing; replaying an accepted signed one is refused as a bad nonce. The
//! state reached survives a snapshot and restore.
#![no_main]
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use splitup_protocol::crypto::VrfProof;
use splitup_protocol::*;
use std::sync::OnceLock;

/// A fast stand-in for the VRF beacon: the rules only need 64 bytes of
/// output per draw (the RFC 9381 proof costs ~157 µs and is tested elsewhere).
struct HashBeacon;

impl Beacon for HashBeacon {
    fn public_key(&self) -> Pubkey {
        Pubkey([9; 32])
    }
    fn prove(&self, alpha: &[u8]) -> (VrfProof, [u8; 64]) {
        let mut beta = [0u8; 64];
        blake3::Hasher::new()
            .update(b"fuzz-beacon")
            .update(alpha)
            .finalize_xof()
            .fill(&mut beta);
        (VrfProof(beta.to_vec()), beta)
    }
}

/// Key 0 is the mint authority, 1..=3 the committee, 4.. actors (4 is a
/// user with money, 5..=7 funded, registered and staked nodes, 8 unknown).
const AUTHORITY: usize = 0;
const USER: usize = 4;
const KEYS: usize = 9;

struct World {
    keys: Vec<Keypair>,
    /// Ledgers with p = 0.08 and p = 1 (every result challenged), each with
    /// a 2-task model, three staked nodes and one execution in progress.
    ledgers: [Ledger; 2],
    now: Millis,
}

fn spec() -> TensorSpec {
    TensorSpec {
        name: "t".into(),
        shape: vec![4],
        dtype: "float32".into(),
    }
}

fn task_def() -> TaskDef {
    TaskDef {
        vram: 2 * GB,
        compute_units: 500,
        inputs: vec![spec()],
        outputs: vec![spec()],
        weight_uri: "file://w".into(),
        weight_hash: [1; 32],
        graph_hash: [2; 32],
    }
}

fn conn(s: u32, d: u32) -> Connection {
    Connection {
        source_task: s,
        destination_task: d,
        source_output: 0,
        dest_input: 0,
    }
}

fn chain(tasks: u32) -> ModelDef {
    let mut connections: Vec<Connection> = (0..tasks).map(|t| conn(t, t + 1)).collect();
    connections.push(conn(tasks, 0));
    ModelDef {
        name: "chain".into(),
        inputs: vec![spec()],
        outputs: vec![spec()],
        tasks: vec![task_def(); tasks as usize],
        connections,
    }
}

fn nonce(l: &Ledger, k: &Pubkey) -> u64 {
    l.accounts.get(k).map(|a| a.nonce).unwrap_or(0)
}

fn send(l: &mut Ledger, k: &Keypair, ix: Instruction, now: Millis) {
    let tx = SignedTx::sign(k, nonce(l, &k.pubkey()), ix);
    l.submit(&tx, now, &HashBeacon).expect("the genesis setup is valid");
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let keys: Vec<Keypair> = (0..KEYS as u8).map(|i| Keypair::from_seed([i + 1; 32])).collect();
        let now = 1_000;
        let make = |challenge_ppm| {
            let g = Genesis {
                params: Params {
                    challenge_ppm,
                    ..Params::default()
                },
                mint_authority: keys[AUTHORITY].pubkey(),
                committee: [keys[1].pubkey(), keys[2].pubkey(), keys[3].pubkey()],
                beacon: HashBeacon.public_key(),
            };
            let mut l = Ledger::genesis(g).unwrap();
            send(&mut l, &keys[USER], Instruction::RegisterModel(chain(2)), now);
            for k in &keys[5..8] {
                let mint = Instruction::Mint {
                    to: k.pubkey(),
                    amount: 10_000 * USDC,
                };
                send(&mut l, &keys[AUTHORITY], mint, now);
                let reg = Instruction::RegisterNode {
                    vram: 8 * GB,
                    supports: vec![(1, 1), (1, 2)],
                };
                send(&mut l, k, reg, now);
                send(&mut l, k, Instruction::Stake { amount: 5_000 * USDC }, now);
            }
            let mint = Instruction::Mint {
                to: keys[USER].pubkey(),
                amount: 100 * USDC,
            };
            send(&mut l, &keys[AUTHORITY], mint, now);
            let exec = Instruction::SubmitExecution {
                model: 1,
                priority: 0,
                input_commitment: [0; 32],
            };
            send(&mut l, &keys[USER], exec, now);
            l.poll_events();
            assert_eq!(l.money_total(), l.supply as u128);
            l
        };
        World {
            ledgers: [make(80_000), make(1_000_000)],
            keys,
            now,
        }
    })
}

fn conserved(l: &Ledger, what: &dyn std::fmt::Debug) {
    assert_eq!(l.money_total(), l.supply as u128, "money not conserved after {what:?}");
}

/// Submits `tx` and checks the invariants; true when accepted.
fn submit_checked(l: &mut Ledger, tx: &SignedTx, now: Millis) -> bool {
    let before = l.clone();
    match l.submit(tx, now, &HashBeacon) {
        Ok(()) => {
            l.poll_events();
            conserved(l, &tx.ix);
            let after = l.clone();
            let replay = l.submit(tx, now, &HashBeacon);
            assert!(
                matches!(replay, Err(ProtocolError::BadNonce { .. })),
                "replay of {:?} gave {replay:?}",
                tx.ix
            );
            assert!(*l == after, "a replay changed the state");
            true
        }
        Err(e) => {
            assert!((1..=12).contains(&e.code()));
            assert!(*l == before, "rejected {:?} ({e}) but the state changed", tx.ix);
            false
        }
    }
}

/// Applies an instruction whose signature is taken as verified, with the
/// same checks (replays are checked on the signed path only: the nonce is
/// checked before anything else, and cloning the state again per step costs
/// more executions than it finds).
fn apply_checked(l: &mut Ledger, signer: Pubkey, n: u64, ix: &Instruction, now: Millis) {
    let before = l.clone();
    match l.apply_verified(signer, n, ix, now, &HashBeacon) {
        Ok(()) => {
            l.poll_events();
            conserved(l, ix);
        }
        Err(e) => {
            assert!((1..=12).contains(&e.code()));
            assert!(*l == before, "rejected {ix:?} ({e}) but the state changed");
        }
    }
}

fn amount(u: &mut Unstructured) -> ArbResult<Micro> {
    Ok(match u.int_in_range(0..=6u8)? {
        0 => 0,
        1 => u.int_in_range(1..=10 * USDC)?,
        2 => u.int_in_range(1_000 * USDC..=10_000 * USDC)?,
        3 => u64::MAX,
        4 => u64::MAX - u.int_in_range(0..=1_000u64)?,
        5 => 5_000 * USDC,
        _ => u.arbitrary()?,
    })
}

fn big(u: &mut Unstructured) -> ArbResult<u64> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => u.int_in_range(0..=16u64)?,
        1 => u.int_in_range(0..=16u64)? * GB,
        2 => u64::MAX,
        3 => u.int_in_range(0..=100_000u64)?,
        _ => u.arbitrary()?,
    })
}

fn pubkey(u: &mut Unstructured, w: &World) -> ArbResult<Pubkey> {
    let i = u.int_in_range(0..=KEYS)?;
    Ok(match w.keys.get(i) {
        Some(k) => k.pubkey(),
        None => Pubkey(u.arbitrary()?),
    })
}

fn tensor_spec(u: &mut Unstructured) -> ArbResult<TensorSpec> {
    if u.ratio(3, 4)? {
        return Ok(spec());
    }
    Ok(TensorSpec {
        name: u.arbitrary()?,
        shape: u.arbitrary_iter()?.take(4).collect::<ArbResult<_>>()?,
        dtype: u.choose(&["float32", "int64", ""])?.to_string(),
    })
}

fn model_def(u: &mut Unstructured) -> ArbResult<ModelDef> {
    let mut def = chain(u.int_in_range(1..=4)?);
    // A valid chain, then some edits.
    for _ in 0..u.int_in_range(0..=3u8)? {
        match u.int_in_range(0..=6u8)? {
            0 => def.tasks.push(TaskDef {
                vram: big(u)?,
                compute_units: big(u)?,
                inputs: vec![tensor_spec(u)?],
                outputs: vec![tensor_spec(u)?],
                ..task_def()
            }),
            1 => {
                let t = u.choose_index(def.tasks.len())?;
                def.tasks[t].vram = big(u)?;
                def.tasks[t].compute_units = big(u)?;
            }
            2 => def.connections.push(Connection {
                source_task: u.int_in_range(0..=6)?,
                destination_task: u.int_in_range(0..=6)?,
                source_output: u.int_in_range(0..=2)?,
                dest_input: u.int_in_range(0..=2)?,
            }),
            3 if !def.connections.is_empty() => {
                let c = u.choose_index(def.connections.len())?;
                def.connections.remove(c);
            }
            4 => {
                let t = u.choose_index(def.tasks.len())?;
                def.tasks[t].inputs.push(tensor_spec(u)?);
            }
            5 => def.outputs.push(tensor_spec(u)?),
            6 => {
                let t = u.choose_index(def.tasks.len())?;
                def.tasks[t].outputs = vec![tensor_spec(u)?];
            }
            _ => {}
        }
    }
    Ok(def)
}

/// An execution id and a 1-based task number: with `in_state`, one whose
/// run is in that state now (so results, validations and votes land where
/// they are expected), else any small pair (0 and absent ones included).
fn exec_task(u: &mut Unstructured, l: &Ledger, in_state: Option<TaskStatus>) -> ArbResult<(u64, u32)> {
    if let Some(status) = in_state {
        let runs: Vec<(u64, u32)> = l
            .executions
            .iter()
            .flat_map(|(id, e)| {
                e.tasks
                    .iter()
                    .enumerate()
                    .filter(move |(_, r)| r.status == status)
                    .map(move |(t, _)| (*id, t as u32 + 1))
            })
            .collect();
        if !runs.is_empty() {
            return Ok(runs[u.choose_index(runs.len())?]);
        }
    }
    Ok((u.int_in_range(0..=4)?, u.int_in_range(0..=4)?))
}

fn truth(execution: u64, task: u32) -> [u8; 32] {
    *blake3::hash(&[&execution.to_le_bytes()[..], &task.to_le_bytes()].concat()).as_bytes()
}

fn commitment(u: &mut Unstructured, e: u64, t: u32) -> ArbResult<[u8; 32]> {
    Ok(if u.ratio(3, 4)? { truth(e, t) } else { u.arbitrary()? })
}

enum Step {
    Advance(Millis),
    Send {
        signer: Pubkey,
        wrong_nonce: Option<u64>,
        ix: Instruction,
    },
}

fn step(u: &mut Unstructured, w: &World, l: &Ledger) -> ArbResult<Step> {
    let run = |e: u64, t: u32| {
        l.executions
            .get(&e)
            .and_then(|x| x.tasks.get((t as usize).wrapping_sub(1)))
    };
    // Who signs: a known key, or whoever the instruction's target names
    // (the node holding a task, its validator, the execution's user).
    let key = u.int_in_range(0..=KEYS - 1)?;
    let role = u.ratio(2, 3)?;
    let mut signer = w.keys[key].pubkey();
    let ix = match u.int_in_range(0..=17u8)? {
        0 => {
            let ms = match u.int_in_range(0..=3u8)? {
                0 => u.int_in_range(1..=5_000)?,
                1 => u.int_in_range(30_000..=200_000)?,
                2 => 25 * 3600 * 1000,
                _ => u.int_in_range(0..=30 * 24 * 3600 * 1000)?,
            };
            return Ok(Step::Advance(ms));
        }
        1 => {
            if role {
                signer = w.keys[AUTHORITY].pubkey();
            }
            Instruction::Mint {
                to: pubkey(u, w)?,
                amount: amount(u)?,
            }
        }
        2 => Instruction::Transfer {
            to: pubkey(u, w)?,
            amount: amount(u)?,
        },
        3 => Instruction::RegisterModel(model_def(u)?),
        4 => Instruction::DeactivateModel {
            model: u.int_in_range(0..=3)?,
        },
        5 => {
            let n = u.int_in_range(0..=4)?;
            let supports = (0..n)
                .map(|_| Ok((u.int_in_range(0..=3)?, u.int_in_range(0..=5)?)))
                .collect::<ArbResult<_>>()?;
            Instruction::RegisterNode {
                vram: big(u)?,
                supports,
            }
        }
        6 => Instruction::Stake { amount: amount(u)? },
        7 => Instruction::RequestUnstake { amount: amount(u)? },
        8 => Instruction::Withdraw,
        9 => Instruction::Heartbeat,
        10 => Instruction::Leave,
        11 => Instruction::SubmitExecution {
            model: u.int_in_range(0..=3)?,
            priority: big(u)?,
            input_commitment: u.arbitrary()?,
        },
        12 | 13 => {
            let (execution, task) = exec_task(u, l, role.then_some(TaskStatus::Assigned))?;
            if let Some(n) = run(execution, task).and_then(|r| r.node).filter(|_| role) {
                signer = n;
            }
            let uris = match u.int_in_range(0..=3u8)? {
                0 => vec![],
                1 => vec!["file://out".into()],
                2 => vec!["x".repeat(u.int_in_range(0..=3000)?)],
                _ => vec!["u".into(); u.int_in_range(0..=80)?],
            };
            Instruction::SubmitResult {
                execution,
                task,
                commitment: commitment(u, execution, task)?,
                output_uris: uris,
            }
        }
        14 => {
            let (execution, task) = exec_task(u, l, role.then_some(TaskStatus::Challenged))?;
            if let Some(v) = run(execution, task).and_then(|r| r.validator).filter(|_| role) {
                signer = v;
            }
            Instruction::SubmitValidation {
                execution,
                task,
                commitment: commitment(u, execution, task)?,
            }
        }
        15 => {
            let execution = u.int_in_range(0..=4)?;
            if let Some(e) = l.executions.get(&execution).filter(|_| role) {
                signer = e.user;
            }
            Instruction::Fetched { execution }
        }
        16 => {
            if role {
                signer = w.keys[u.int_in_range(1..=3)?].pubkey();
            }
            Instruction::LivenessVote {
                node: pubkey(u, w)?,
                unresponsive: u.arbitrary()?,
            }
        }
        _ => {
            let (execution, task) = exec_task(u, l, role.then_some(TaskStatus::Disputed))?;
            if role {
                // A member who has not voted on it yet, if any.
                let voted = |k: &Keypair| run(execution, task).is_some_and(|r| r.votes.contains_key(&k.pubkey()));
                let first = u.int_in_range(1..=3)?;
                let m = (0..3)
                    .map(|i| 1 + (first - 1 + i) % 3)
                    .find(|&m| !voted(&w.keys[m]))
                    .unwrap_or(first);
                signer = w.keys[m].pubkey();
            }
            Instruction::DisputeVote {
                execution,
                task,
                asserter_honest: u.arbitrary()?,
            }
        }
    };
    let wrong_nonce = if u.ratio(1, 16)? { Some(u.arbitrary()?) } else { None };
    Ok(Step::Send {
        signer,
        wrong_nonce,
        ix,
    })
}

fn key_of<'a>(w: &'a World, p: &Pubkey) -> Option<&'a Keypair> {
    w.keys.iter().find(|k| k.pubkey() == *p)
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let which = data.first().map_or(0, |b| (b & 1) as usize);

    // 1 and 2: the bytes as JSON, as the HTTP handler reads them.
    let json_ix = match serde_json::from_slice::<SignedTx>(data) {
        Ok(tx) => {
            let mut l = w.ledgers[which].clone();
            submit_checked(&mut l, &tx, w.now);
            Some((tx.nonce as usize, tx.ix))
        }
        Err(_) => serde_json::from_slice::<Instruction>(data)
            .ok()
            .map(|ix| (data.len(), ix)),
    };
    if let Some((pick, ix)) = json_ix {
        let mut l = w.ledgers[which].clone();
        let k = &w.keys[pick % KEYS];
        let tx = SignedTx::sign(k, nonce(&l, &k.pubkey()), ix);
        submit_checked(&mut l, &tx, w.now);
        return;
    }

    // 3: the bytes as a sequence of steps.
    let mut u = Unstructured::new(data);
    let mut l = w.ledgers[which].clone();
    let mut now = w.now;
    let mut first = true;
    let mut steps = 0;
    for _ in 0..32 {
        if u.is_empty() {
            break;
        }
        let Ok(s) = step(&mut u, w, &l) else {
            break;
        };
        steps += 1;
        match s {
            Step::Advance(ms) => {
                now += ms;
                l.tick(now, &HashBeacon);
                l.poll_events();
                conserved(&l, &"a tick");
            }
            Step::Send {
                signer,
                wrong_nonce,
                ix,
            } => {
                let n = wrong_nonce.unwrap_or_else(|| nonce(&l, &signer));
                match key_of(w, &signer).filter(|_| first) {
                    Some(k) => {
                        first = false;
                        submit_checked(&mut l, &SignedTx::sign(k, n, ix), now);
                    }
                    None => apply_checked(&mut l, signer, n, &ix, now),
                }
            }
        }
    }
    // The state it reached survives a snapshot.
    if steps > 0 {
        let restored = Ledger::restore(&l.snapshot()).expect("a snapshot restores");
        assert!(restored == l, "a snapshot did not restore the same state");
    }
});
