//! Runs a plan (a task DAG) or a whole model on this machine.
//!
//! Two stages, as a node would do them: [`prepare_plan`] checks every file's
//! BLAKE3 against the manifest and loads each task into a warm session;
//! [`execute`] then runs the DAG, every task as soon as its inputs exist,
//! up to `parallel` at a time.

use crate::{ExecError, Runtime, Session};
use splitup_graph::plan::{self, Manifest, TaskInfo, TensorSpec, MANIFEST_BYTES_MAX, MANIFEST_FILE};
use splitup_graph::Graph;
use splitup_tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("invalid plan manifest: {0}")]
    Manifest(String),
    #[error(transparent)]
    Assemble(#[from] plan::AssembleError),
    #[error("task {task}: {source}")]
    Task { task: u64, source: ExecError },
    #[error("task {task}: output {name:?} is {actual}, but the plan says {expected}")]
    OutputSpec {
        task: u64,
        name: String,
        actual: String,
        expected: String,
    },
    #[error("{0}")]
    Inputs(String),
    /// The gate refused the model before any runtime saw it.
    #[error("the model is refused: {0}")]
    Refused(splitup_graph::model::LoadError),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Reads a file of at most `max` bytes (checked before reading).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, RunError> {
    let io = |source| RunError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > max {
        return Err(RunError::File {
            path: path.display().to_string(),
            msg: format!("is {len} bytes, above the limit of {max}"),
        });
    }
    std::fs::read(path).map_err(io)
}

pub fn load_manifest(dir: &Path) -> Result<Manifest, RunError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = read_bounded(&path, MANIFEST_BYTES_MAX)?;
    let m: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| RunError::Manifest(format!("{}: {e}", path.display())))?;
    m.validate().map_err(RunError::Manifest)?;
    Ok(m)
}

/// Reads one task's files, checks their hashes and joins them into a runnable model.
pub fn task_model(dir: &Path, t: &TaskInfo) -> Result<Vec<u8>, RunError> {
    let read = |f: &plan::FileRef| -> Result<Vec<u8>, RunError> {
        let path = dir.join(&f.file);
        let bytes = read_bounded(&path, f.bytes)?;
        if bytes.len() as u64 != f.bytes {
            return Err(RunError::File {
                path: path.display().to_string(),
                msg: format!("is {} bytes, the manifest says {}", bytes.len(), f.bytes),
            });
        }
        Ok(bytes)
    };
    Ok(plan::assemble_task(t, &read(&t.graph)?, &read(&t.weights)?)?)
}

/// One loader thread's result for one task.
type Slot = std::sync::Mutex<Option<Result<Box<dyn Session>, RunError>>>;

/// Loads every task of a plan into a session, `parallel` tasks at a time.
pub fn prepare_plan(
    dir: &Path,
    m: &Manifest,
    rt: &dyn Runtime,
    parallel: usize,
    on_loaded: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Box<dyn Session>>, RunError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<Slot> = m.tasks.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1).min(m.tasks.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(t) = m.tasks.get(i) else { break };
                let r = task_model(dir, t)
                    .and_then(|bytes| rt.load(&bytes).map_err(|source| RunError::Task { task: t.id, source }));
                if r.is_ok() {
                    on_loaded(t.id);
                }
                *slots[i].lock().unwrap() = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .map(|s| s.into_inner().unwrap().expect("every slot is filled"))
        .collect()
}

#[derive(Clone, Debug)]
pub struct TaskRun {
    pub id: u64,
    pub elapsed: Duration,
    /// Bytes this task received from other tasks in this run.
    pub bytes_from_tasks: u64,
}

#[derive(Clone, Debug)]
pub struct Report {
    /// Model outputs, in the order the model declares them.
    pub outputs: Vec<(String, Tensor)>,
    pub tasks: Vec<TaskRun>,
    /// Bytes actually passed between tasks (the sum of `bytes_from_tasks`).
    pub passed_bytes: u64,
    /// Most tasks that ran at the same time.
    pub max_concurrency: usize,
    pub elapsed: Duration,
}

fn describe(t: &Tensor) -> String {
    format!("{} {:?}", t.dtype, t.shape)
}

fn spec_matches(spec: &TensorSpec, t: &Tensor) -> bool {
    DType::from_name(&spec.dtype) == Some(t.dtype) && spec.shape.iter().map(|&d| d as usize).eq(t.shape.iter().copied())
}

/// Checks the user's inputs against the plan: every input given, nothing
/// unknown, types and shapes as planned.
pub fn check_inputs(specs: &[TensorSpec], given: &BTreeMap<String, Tensor>) -> Result<(), RunError> {
    let mut problems = Vec::new();
    for s in specs {
        match given.get(&s.name) {
            None => problems.push(format!("missing input {:?} ({} {:?})", s.name, s.dtype, s.shape)),
            Some(t) if !spec_matches(s, t) => problems.push(format!(
                "input {:?} is {}, but the plan was made for {} {:?}",
                s.name,
                describe(t),
                s.dtype,
                s.shape
            )),
            _ => {}
        }
    }
    for name in given.keys() {
        if !specs.iter().any(|s| &s.name == name) {
            problems.push(format!(
                "unknown input {name:?} (the model takes: {})",
                specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::Inputs(problems.join("; ")))
    }
}

pub enum Event {
    Started(u64),
    Finished(u64, Duration),
}

/// Executes the DAG with prepared sessions (one per task, in manifest order).
pub fn execute(
    m: &Manifest,
    sessions: &mut [Box<dyn Session>],
    inputs: &BTreeMap<String, Tensor>,
    parallel: usize,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Report, RunError> {
    check_inputs(&m.inputs, inputs)?;
    let start = Instant::now();
    // Values by (source task, output index); task 0 is the user.
    let mut values: HashMap<(u64, u64), Arc<Tensor>> = HashMap::new();
    for (i, s) in m.inputs.iter().enumerate() {
        values.insert((0, i as u64), Arc::new(inputs[&s.name].clone()));
    }
    let mut feeds: HashMap<u64, Vec<&plan::TaskConnection>> = HashMap::new();
    for c in &m.connections {
        feeds.entry(c.destination_task_id).or_default().push(c);
    }
    for v in feeds.values_mut() {
        v.sort_by_key(|c| c.dest_input_index);
    }
    let index: HashMap<u64, usize> = m.tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let mut slots: Vec<Option<&mut Box<dyn Session>>> = sessions.iter_mut().map(Some).collect();
    let mut pending: Vec<u64> = m.task_ids();
    let mut runs = Vec::new();
    let mut running = 0usize;
    let mut max_concurrency = 0usize;
    let parallel = parallel.max(1);
    std::thread::scope(|scope| -> Result<(), RunError> {
        let (tx, rx) = mpsc::channel::<(u64, Result<(Vec<(String, Tensor)>, Duration), RunError>)>();
        let mut failure = None;
        loop {
            // Start every ready task, lowest id first, up to the parallelism bound.
            let mut k = 0;
            while k < pending.len() && running < parallel && failure.is_none() {
                let id = pending[k];
                let conns = feeds.get(&id).map(Vec::as_slice).unwrap_or(&[]);
                if !conns
                    .iter()
                    .all(|c| values.contains_key(&(c.source_task_id, c.source_output_index)))
                {
                    k += 1;
                    continue;
                }
                pending.remove(k);
                let task = &m.tasks[index[&id]];
                let args: Vec<(String, Arc<Tensor>)> = conns
                    .iter()
                    .map(|c| {
                        (
                            task.inputs[c.dest_input_index as usize].name.clone(),
                            values[&(c.source_task_id, c.source_output_index)].clone(),
                        )
                    })
                    .collect();
                let from_tasks: u64 = conns
                    .iter()
                    .filter(|c| c.source_task_id != 0)
                    .map(|c| values[&(c.source_task_id, c.source_output_index)].bytes().len() as u64)
                    .sum();
                runs.push(TaskRun {
                    id,
                    elapsed: Duration::ZERO,
                    bytes_from_tasks: from_tasks,
                });
                let session = slots[index[&id]].take().expect("each task runs once");
                let tx = tx.clone();
                running += 1;
                max_concurrency = max_concurrency.max(running);
                on_event(Event::Started(id));
                scope.spawn(move || {
                    let t0 = Instant::now();
                    let refs: Vec<(&str, &Tensor)> = args.iter().map(|(n, t)| (n.as_str(), t.as_ref())).collect();
                    let r = session
                        .run(&refs)
                        .map(|o| (o, t0.elapsed()))
                        .map_err(|source| RunError::Task { task: id, source });
                    let _ = tx.send((id, r));
                });
            }
            if running == 0 {
                break;
            }
            let (id, r) = rx.recv().expect("a running task always reports");
            running -= 1;
            match r {
                Err(e) => {
                    failure.get_or_insert(e);
                }
                Ok((outs, elapsed)) => {
                    on_event(Event::Finished(id, elapsed));
                    let task = &m.tasks[index[&id]];
                    if let Some(run) = runs.iter_mut().find(|r| r.id == id) {
                        run.elapsed = elapsed;
                    }
                    let by_name: HashMap<String, Tensor> = outs.into_iter().collect();
                    for (o, spec) in task.outputs.iter().enumerate() {
                        match by_name.get(&spec.name) {
                            Some(t) if spec_matches(spec, t) => {
                                values.insert((id, o as u64), Arc::new(t.clone()));
                            }
                            Some(t) => {
                                failure.get_or_insert(RunError::OutputSpec {
                                    task: id,
                                    name: spec.name.clone(),
                                    actual: describe(t),
                                    expected: format!("{} {:?}", spec.dtype, spec.shape),
                                });
                            }
                            None => {
                                failure.get_or_insert(RunError::OutputSpec {
                                    task: id,
                                    name: spec.name.clone(),
                                    actual: "missing".into(),
                                    expected: format!("{} {:?}", spec.dtype, spec.shape),
                                });
                            }
                        }
                    }
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None if !pending.is_empty() => Err(RunError::Manifest(format!("tasks {pending:?} never became ready"))),
            None => Ok(()),
        }
    })?;
    let outputs = m
        .connections
        .iter()
        .filter(|c| c.destination_task_id == 0)
        .map(|c| {
            (
                m.outputs[c.dest_input_index as usize].name.clone(),
                c.dest_input_index,
                values[&(c.source_task_id, c.source_output_index)].as_ref().clone(),
            )
        })
        .collect::<Vec<_>>();
    let mut outputs = outputs;
    outputs.sort_by_key(|o| o.1);
    let passed_bytes = runs.iter().map(|r| r.bytes_from_tasks).sum();
    Ok(Report {
        outputs: outputs.into_iter().map(|(n, _, t)| (n, t)).collect(),
        tasks: runs,
        passed_bytes,
        max_concurrency,
        elapsed: start.elapsed(),
    })
}

/// Prepares the whole (unsplit) model as one session.
/// Loads the unsplit model after the same gate every task passes
/// (`check_runnable`: allow-list, no external data, bounded loops, versions).
pub fn prepare_model(g: &Graph, rt: &dyn Runtime) -> Result<Box<dyn Session>, RunError> {
    let proto = g.to_proto(true);
    splitup_graph::model::check_runnable(&proto).map_err(RunError::Refused)?;
    use prost::Message;
    Ok(rt.load(&proto.encode_to_vec())?)
}

/// Runs the unsplit model, checking inputs by the same rules as a plan.
pub fn run_model(
    session: &mut dyn Session,
    specs: &[TensorSpec],
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, RunError> {
    check_inputs(specs, inputs)?;
    let refs: Vec<(&str, &Tensor)> = specs.iter().map(|s| (s.name.as_str(), &inputs[&s.name])).collect();
    Ok(session.run(&refs)?)
}

/// Writes a plan's files into `dir` (created if needed), each through a
/// temporary name and a rename, the manifest last: a plan directory either
/// has a manifest whose files are all complete, or no manifest.
pub fn write_plan(dir: &Path, files: &plan::PlanFiles) -> Result<(), RunError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| RunError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let manifest = serde_json::to_vec_pretty(&files.manifest).map_err(|e| RunError::Manifest(e.to_string()))?;
    for (name, bytes) in files
        .files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .chain([(MANIFEST_FILE, manifest.as_slice())])
    {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}
