//! Registration that checks what it is told. Before a `RegisterModel` is
//! applied, the ledger reads every task's blobs from its store and refuses
//! the model unless:
//! - every graph and weights blob exists and matches its hash (`Store::get`
//!   checks content against name);
//! - every task passes the gate (`plan::join_weights` → `check_runnable`:
//!   allow-listed ops, no external data, bounded loops, versions the pinned
//!   ONNX Runtime loads);
//! - ONNX Runtime loads it, in a task worker (`splitup_exec::worker`: a
//!   child process under the memory ceiling the task's declared VRAM allows
//!   and a load time limit), so a hostile graph never reaches a runtime in
//!   the ledger's own process; without a worker command (an embedded ledger
//!   in a benchmark) this step is skipped;
//! - the declared inputs and outputs are the task graph's own (names, types,
//!   shapes);
//! - the declared VRAM and compute units are at least what the graph
//!   implies, recomputed by partitioning the task graph alone (10% slack for
//!   rounding). When the requirement cannot be recomputed without a runtime
//!   (an op whose shape only ONNX Runtime knows), the declared figures stand
//!   and the nodes' per-task memory ceiling and wall-clock limit enforce them.
//!
//! This is the shell's check (a Solana program cannot run it): the rules in
//! `splitup_protocol` stay pure.

use splitup_exec::worker::{memory_ceiling, Worker, WorkerCommand};
use splitup_graph::model::Graph;
use splitup_graph::partition::{partition, Options};
use splitup_graph::shape::Bindings;
use splitup_protocol::crypto::to_hex;
use splitup_protocol::{ModelDef, TaskDef, TensorSpec};
use splitup_store::Store;
use std::time::Duration;

/// Declared figures may be this much (percent) below the recomputed ones.
const SLACK_PCT: u64 = 10;

/// Checks a model about to be registered; `Err` says which task and why.
/// `worker` starts the task workers that load each task in ONNX Runtime.
pub async fn check_model(def: &ModelDef, store: &Store, worker: Option<&WorkerCommand>) -> Result<(), String> {
    for (i, t) in def.tasks.iter().enumerate() {
        let task = i + 1;
        let fetch = |h: [u8; 32], what: &'static str| async move {
            let hex = to_hex(&h);
            store
                .get(&hex)
                .await
                .map_err(|e| format!("task {task}: {what} blob {hex}: {e}"))
        };
        let graph = fetch(t.graph_hash, "graph").await?;
        let weights = fetch(t.weight_hash, "weights").await?;
        let t = t.clone();
        let worker = worker.cloned();
        tokio::task::spawn_blocking(move || {
            let joined = check_task(task, &t, &graph, &weights)?;
            match worker {
                Some(cmd) => loads(task, &t, &joined, &cmd),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| format!("task {task}: the check failed: {e}"))??;
    }
    Ok(())
}

fn specs_match(task: usize, what: &str, declared: &[TensorSpec], actual: &[TensorSpec]) -> Result<(), String> {
    if declared != actual {
        let show = |v: &[TensorSpec]| {
            v.iter()
                .map(|s| format!("{} {} {:?}", s.name, s.dtype, s.shape))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "task {task}: declared {what} [{}] are not the graph's [{}]",
            show(declared),
            show(actual)
        ));
    }
    Ok(())
}

/// Loads the joined task in a task worker; a refusal (or the worker dying,
/// or passing its ceiling or time) refuses the model. A worker this machine
/// cannot start is reported and not held against the model.
fn loads(task: usize, t: &TaskDef, joined: &[u8], cmd: &WorkerCommand) -> Result<(), String> {
    let limit = LOAD_FLOOR.saturating_add(Duration::from_secs(joined.len() as u64 / 50_000_000));
    let attempt = Worker::start(cmd, memory_ceiling(t.vram, 1), 1).and_then(|mut w| w.load(joined, limit));
    match attempt {
        Ok(()) => Ok(()),
        Err(e) if e.is_task_fault() => Err(format!("task {task}: does not load: {e}")),
        Err(e) => {
            tracing::warn!("registration: task {task} not load-tested: {e}");
            Ok(())
        }
    }
}

/// Time allowed to load a task: a floor plus 1 s per 50 MB.
const LOAD_FLOOR: Duration = Duration::from_secs(30);

/// The gate, the interface and the recomputed requirement of one task;
/// returns the task's ONNX with its weights joined.
pub fn check_task(task: usize, t: &TaskDef, graph: &[u8], weights: &[u8]) -> Result<Vec<u8>, String> {
    let joined = splitup_graph::plan::join_weights(graph, weights).map_err(|(_, e)| format!("task {task}: {e}"))?;
    let g = Graph::load(&joined).map_err(|e| format!("task {task}: {e}"))?;
    let fixed = |name: &str, vt: Option<&splitup_graph::model::ValueType>| -> Option<TensorSpec> {
        let vt = vt?;
        let shape = vt
            .dims
            .as_ref()?
            .iter()
            .map(|d| match d {
                splitup_graph::model::Dim::Fixed(n) => Some(*n as u64),
                splitup_graph::model::Dim::Sym(_) => None,
            })
            .collect::<Option<Vec<u64>>>()?;
        Some(TensorSpec {
            name: name.to_string(),
            shape,
            dtype: vt.dtype.name().to_string(),
        })
    };
    let inputs: Vec<TensorSpec> = g
        .inputs
        .iter()
        .map(|(n, vt)| fixed(n, Some(vt)).ok_or_else(|| format!("task {task}: input {n:?} has no fixed shape")))
        .collect::<Result<_, _>>()?;
    specs_match(task, "inputs", &t.inputs, &inputs)?;
    // Outputs may carry no declared type in the graph; names must match in order.
    let names: Vec<&str> = g.outputs.iter().map(|(n, _)| n.as_str()).collect();
    let declared: Vec<&str> = t.outputs.iter().map(|s| s.name.as_str()).collect();
    if names != declared {
        return Err(format!(
            "task {task}: declared outputs {declared:?} are not the graph's {names:?}"
        ));
    }
    let opts = Options {
        capacities: vec![u64::MAX],
        overhead_pct: 10,
        vertical_split: false,
    };
    let p = match partition(&g, &Bindings::default(), &opts) {
        Ok(p) => p,
        // Only a runtime could tell (see the module docs): the nodes enforce the declared figures.
        Err(_) => return Ok(joined),
    };
    // Outputs whose type the graph leaves open: as inferred.
    for (n, s) in g.outputs.iter().map(|(n, _)| n).zip(&t.outputs) {
        if let Some(info) = p.shapes.info.get(n) {
            let actual = TensorSpec {
                name: n.clone(),
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                dtype: info.dtype.name().to_string(),
            };
            if &actual != s {
                return Err(format!(
                    "task {task}: declared output {} {} {:?} is not the graph's {:?}",
                    s.name, s.dtype, s.shape, actual
                ));
            }
        }
    }
    let vram: u64 = p.tasks.iter().map(|x| x.vram_bytes).max().unwrap_or(0);
    let flops: u64 = p.tasks.iter().map(|x| x.flops).fold(0u64, |a, b| a.saturating_add(b));
    let cu = splitup_graph::cost::compute_units(flops);
    let floor = |x: u64| x.saturating_sub(x.saturating_mul(SLACK_PCT) / 100);
    if t.vram < floor(vram) {
        return Err(format!(
            "task {task}: declares {} bytes of VRAM; its graph needs {vram} bytes",
            t.vram
        ));
    }
    if t.compute_units < floor(cu) {
        return Err(format!(
            "task {task}: declares {} compute units; its graph needs {cu}",
            t.compute_units
        ));
    }
    Ok(joined)
}

/// A result is recorded only once its outputs are in the ledger's store: a
/// commitment nobody can read (withheld, or never uploaded) is refused, so
/// it is never paid and downstream nodes never wait on it.
pub async fn check_result(commitment: &[u8; 32], store: &Store) -> Result<(), String> {
    let hash = splitup_protocol::crypto::to_hex(commitment);
    match store.modified(&hash).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "the committed outputs {hash} are not in the ledger's store: upload them before submitting (a result nobody can read is never accepted)"
        )),
        Err(e) => Err(format!("the store cannot confirm the outputs {hash}: {e}")),
    }
}

/// A validator's reveal is admitted only if the revealed bytes produce the
/// seal it committed before it could see the result it checks
/// ([`splitup_protocol::crypto::validation_seal`]): a validator that sealed
/// anything else cannot reveal the asserter's outputs afterwards.
pub async fn check_reveal(
    validator: &splitup_protocol::Pubkey,
    execution: u64,
    task: u32,
    commitment: &[u8; 32],
    seal: &[u8; 32],
    store: &Store,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let hash = splitup_protocol::crypto::to_hex(commitment);
    let (_, mut chunks) = store.get_stream(&hash).await.map_err(|e| match e {
        splitup_store::StoreError::Missing(_) => {
            format!("the revealed outputs {hash} are not in the ledger's store: upload them before revealing")
        }
        e => format!("the revealed outputs {hash} cannot be read: {e}"),
    })?;
    let mut h = splitup_protocol::crypto::validation_sealer(validator, execution, task);
    while let Some(c) = chunks.next().await {
        h.update(&c.map_err(|e| format!("the revealed outputs {hash} cannot be read: {e}"))?);
    }
    if h.finalize().as_bytes() != seal {
        return Err(format!(
            "the revealed outputs {hash} do not produce the seal this validator committed: a seal must be of the validator's own outputs, sealed before it could see the result it checks"
        ));
    }
    Ok(())
}
