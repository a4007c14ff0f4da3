//! Client operations: deploy a plan, submit an execution, fetch its outputs.

use crate::{unhex32, Client};
use anyhow::{bail, Context, Result};
use splitup_graph::plan::Manifest;
use splitup_protocol::api::{ExecutionView, ModelView};
use splitup_protocol::{Connection, ExecStatus, Instruction, Keypair, ModelDef, OutputCheck, TaskDef, TensorSpec};
use splitup_tensor::{IndicesOf, OutputTolerance, Pairings, Tensor};
use std::collections::BTreeMap;

fn spec(s: &splitup_graph::plan::TensorSpec) -> TensorSpec {
    TensorSpec {
        name: s.name.clone(),
        shape: s.shape.clone(),
        dtype: s.dtype.clone(),
    }
}

/// A task's calibrated tolerances and pairings, as the ledger records them
/// (one [`OutputCheck`] per name).
pub fn to_checks(tolerances: &BTreeMap<String, OutputTolerance>, pairings: &Pairings) -> Vec<OutputCheck> {
    tolerances
        .iter()
        .map(|(name, t)| OutputCheck {
            name: name.clone(),
            rtol: t.rtol,
            atol: t.atol,
            miss_rate: t.miss_rate,
            indices_of: pairings.get(name).map(|p| (p.values.clone(), p.axis as u32)),
        })
        .collect()
}

/// The judge's tolerances and pairings from a task's recorded checks
/// (the inverse of [`to_checks`]).
pub fn from_checks(checks: &[OutputCheck]) -> (BTreeMap<String, OutputTolerance>, Pairings) {
    let mut tolerances = BTreeMap::new();
    let mut pairings = Pairings::new();
    for c in checks {
        tolerances.insert(
            c.name.clone(),
            OutputTolerance {
                rtol: c.rtol,
                atol: c.atol,
                miss_rate: c.miss_rate,
            },
        );
        if let Some((values, axis)) = &c.indices_of {
            pairings.insert(
                c.name.clone(),
                IndicesOf {
                    values: values.clone(),
                    axis: *axis as usize,
                },
            );
        }
    }
    (tolerances, pairings)
}

/// Calibrates every task of a plan at deploy time (see
/// `splitup_exec::calibrate`): runs it under the variants honest nodes may
/// use (fp32 at three optimisation levels and thread counts, fp16 and bf16)
/// on `inputs`, or on seeded sample inputs when none are given, and returns
/// each task's checks for [`deploy`]. `progress` gets (done, total) per
/// task; `note` gets one line per reduced precision a task cannot be
/// checked at.
pub fn calibrate(
    m: &Manifest,
    files: &BTreeMap<String, Vec<u8>>,
    inputs: Option<&BTreeMap<String, Tensor>>,
    progress: &dyn Fn(usize, usize),
    note: &dyn Fn(String),
) -> Result<Vec<Vec<OutputCheck>>> {
    use splitup_exec::calibrate::{calibrate_plan, sample_inputs, Variant, SAFETY};
    let sampled;
    let inputs = match inputs {
        Some(i) => i,
        None => {
            let seed = m.tasks.first().map_or(0, |t| {
                u64::from_str_radix(t.graph.blake3.get(..16).unwrap_or("0"), 16).unwrap_or(0)
            });
            sampled = sample_inputs(&m.inputs, seed)?;
            &sampled
        }
    };
    let tasks = calibrate_plan(m, files, inputs, &Variant::standard(), SAFETY, progress)
        .context("calibrating the tasks' tolerances (give representative inputs with --calibration-input)")?;
    Ok(tasks
        .into_iter()
        .map(|t| {
            for (v, why) in &t.calibration.excluded {
                note(format!("task {}: nodes must not run it at {v}: {why}", t.task));
            }
            to_checks(&t.calibration.tolerances, &t.pairings)
        })
        .collect())
}

/// Uploads a plan's files and registers the model with each task's
/// `checks` (from [`calibrate`]); returns its id.
pub fn deploy(
    c: &Client,
    key: &Keypair,
    m: &Manifest,
    files: &BTreeMap<String, Vec<u8>>,
    checks: &[Vec<OutputCheck>],
    progress: &dyn Fn(usize, usize),
) -> Result<u64> {
    let def = upload_plan(c, m, files, checks, progress)?;
    let events = c.send(key, Instruction::RegisterModel(def))?;
    events
        .iter()
        .find_map(|e| e.get("ModelRegistered").and_then(|m| m["model"].as_u64()))
        .context("the ledger did not report a model id")
}

/// Uploads a plan's files; returns the model's description for `RegisterModel`.
pub fn upload_plan(
    c: &Client,
    m: &Manifest,
    files: &BTreeMap<String, Vec<u8>>,
    checks: &[Vec<OutputCheck>],
    progress: &dyn Fn(usize, usize),
) -> Result<ModelDef> {
    if checks.len() != m.tasks.len() {
        bail!("{} tasks but checks for {}", m.tasks.len(), checks.len());
    }
    let mut tasks = Vec::new();
    for (i, t) in m.tasks.iter().enumerate() {
        let graph = files
            .get(&t.graph.file)
            .with_context(|| format!("missing {}", t.graph.file))?;
        let weights = files
            .get(&t.weights.file)
            .with_context(|| format!("missing {}", t.weights.file))?;
        let gh = c.put_blob(graph.clone())?;
        let wh = c.put_blob(weights.clone())?;
        if gh != t.graph.blake3 || wh != t.weights.blake3 {
            bail!("task {}: the files do not match the manifest's hashes", t.id);
        }
        tasks.push(TaskDef {
            vram: t.vram_requirement,
            compute_units: t.compute_units.max(1),
            inputs: t.inputs.iter().map(spec).collect(),
            outputs: t.outputs.iter().map(spec).collect(),
            weight_uri: c.blob_uri(&wh),
            weight_hash: unhex32(&wh).context("the store named a blob by a non-hash")?,
            graph_hash: unhex32(&gh).context("the store named a blob by a non-hash")?,
            checks: checks[i].clone(),
        });
        progress(i + 1, m.tasks.len());
    }
    let def = ModelDef {
        name: m.name.clone(),
        inputs: m.inputs.iter().map(spec).collect(),
        outputs: m.outputs.iter().map(spec).collect(),
        tasks,
        connections: m
            .connections
            .iter()
            .map(|k| Connection {
                source_task: k.source_task_id as u32,
                destination_task: k.destination_task_id as u32,
                source_output: k.source_output_index as u32,
                dest_input: k.dest_input_index as u32,
            })
            .collect(),
    };
    Ok(def)
}

/// Uploads the inputs (one safetensors blob) and submits an execution; returns its id.
pub fn submit(c: &Client, key: &Keypair, model: u64, inputs: &BTreeMap<String, Tensor>, priority: u64) -> Result<u64> {
    let def = c.get_as::<ModelView>(&format!("/v1/models/{model}"))?.def;
    for s in &def.inputs {
        let name = s.name.as_str();
        let t = inputs.get(name).with_context(|| format!("missing input {name:?}"))?;
        if t.dtype.name() != s.dtype || t.shape.iter().map(|&d| d as u64).collect::<Vec<_>>() != s.shape {
            bail!(
                "input {name:?} is {} {:?}, the model takes {} {:?}",
                t.dtype,
                t.shape,
                s.dtype,
                s.shape
            );
        }
    }
    for name in inputs.keys() {
        if !def.inputs.iter().any(|s| s.name == *name) {
            bail!("the model has no input {name:?}");
        }
    }
    let blob = splitup_tensor::st::encode(inputs)?;
    let hash = c.put_blob(blob)?;
    let events = c.send(
        key,
        Instruction::SubmitExecution {
            model,
            priority,
            input_commitment: unhex32(&hash).unwrap(),
        },
    )?;
    events
        .iter()
        .find_map(|e| e.get("ExecutionSubmitted").and_then(|m| m["execution"].as_u64()))
        .context("the ledger did not report an execution id")
}

/// The execution's model outputs, in model order, once it has completed.
pub fn fetch(c: &Client, execution: u64) -> Result<Vec<(String, Tensor)>> {
    let e: ExecutionView = c.get_as(&format!("/v1/executions/{execution}"))?;
    match &e.status {
        ExecStatus::Completed => {}
        ExecStatus::InProgress => bail!("execution {execution} is still in progress"),
        ExecStatus::Failed(why) => bail!("execution {execution} failed, so it has no outputs: {why}"),
    }
    let def = c.get_as::<ModelView>(&format!("/v1/models/{}", e.model))?.def;
    let mut out = Vec::new();
    for (k, spec) in def.outputs.iter().enumerate() {
        let conn = def
            .connections
            .iter()
            .find(|x| x.destination_task == 0 && x.dest_input == k as u32)
            .context("output without a source")?;
        let t = task_output(c, &e, &def, conn.source_task, conn.source_output)?;
        out.push((spec.name.clone(), t));
    }
    Ok(out)
}

/// The tensor that output `index` of `task` (0: the user's inputs) produced
/// in this execution. A model or execution that lacks what it names is an
/// error, never a panic.
pub fn task_output(c: &Client, execution: &ExecutionView, def: &ModelDef, task: u32, index: u32) -> Result<Tensor> {
    let (blob, name) = if task == 0 {
        let spec = def
            .inputs
            .get(index as usize)
            .with_context(|| format!("the model has no input {index}"))?;
        (crate::hex(&execution.input), spec.name.clone())
    } else {
        let r = execution.task(task).map_err(anyhow::Error::msg)?;
        // Read by the commitment on the ledger, never by a location the
        // asserter chose: `get_blob` checks the bytes hash to it.
        let committed = r.commitment.with_context(|| format!("task {task} has no output yet"))?;
        let spec = def
            .tasks
            .get(task as usize - 1)
            .and_then(|t| t.outputs.get(index as usize))
            .with_context(|| format!("task {task} of the model has no output {index}"))?;
        (crate::hex(&committed), spec.name.clone())
    };
    let bytes = c.get_blob(&blob)?;
    let mut tensors = splitup_tensor::st::decode(&bytes)?;
    tensors
        .remove(&name)
        .with_context(|| format!("blob {blob} lacks tensor {name:?}"))
}
