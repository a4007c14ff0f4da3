//! The commands: validated arguments in, library calls, a report out.

use crate::util::{human, plural, read_inputs, write_outputs};
use crate::{DemoArgs, GenerateArgs, ModelArgs, PartitionArgs, RunArgs, RunPlanArgs, SimArgs, TransformerArgs};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use splitup_exec::runner::{self, Event};
use splitup_exec::OrtRuntime;
use splitup_graph::builder::{transformer, Positions, TransformerConfig};
use splitup_graph::partition::{self, Options};
use splitup_graph::plan::{self, Manifest, TensorSpec};
use splitup_graph::shape::Bindings;
use splitup_graph::{Dim, Graph};
use splitup_tensor::{allclose, Tensor, Tolerance};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg:12} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

pub fn transformer_config(a: &TransformerArgs) -> TransformerConfig {
    TransformerConfig {
        layers: a.layers,
        hidden: a.hidden,
        heads: a.heads,
        kv_heads: a.kv_heads,
        ffn: a.ffn,
        vocab: a.vocab,
        max_seq: a.max_seq,
        positions: if a.positions == "learned" {
            Positions::Learned
        } else {
            Positions::Rotary
        },
        dtype: splitup_tensor::DType::F32,
        materialise: true,
        seed: a.seed,
    }
}

pub fn load_model(a: &ModelArgs) -> Result<(Graph, Bindings)> {
    let mut g = match a.model.as_str() {
        "@tiny" => transformer(&TransformerConfig::tiny()).map_err(anyhow::Error::msg)?,
        "@llama-70b" => transformer(&TransformerConfig::llama_70b()).map_err(anyhow::Error::msg)?,
        m if m.starts_with('@') => {
            bail!("unknown generated model {m:?}; use @tiny or @llama-70b, or a path to an .onnx file")
        }
        path => Graph::load_file(std::path::Path::new(path)).with_context(|| format!("cannot load {path}"))?,
    };
    if let Some(seed) = a.randomize_weights {
        let n = splitup_graph::transform::randomize_constant_weights(&mut g, seed);
        eprintln!("replaced {n} ConstantOfShape weights with seeded random ones (seed {seed})");
    }
    let mut b = Bindings::default();
    b.dims.extend(a.dims.iter().cloned());
    b.shapes.extend(a.shapes.iter().cloned());
    // Generated models declare batch and seq; default them so `@tiny` and
    // `@llama-70b` just work (seq within the model's own maximum).
    if let Some(max_seq) = match a.model.as_str() {
        "@tiny" => Some(TransformerConfig::tiny().max_seq),
        "@llama-70b" => Some(TransformerConfig::llama_70b().max_seq),
        _ => None,
    } {
        b.dims.entry("batch".into()).or_insert(1);
        b.dims.entry("seq".into()).or_insert(128.min(max_seq));
        if b.dims["seq"] > max_seq || b.dims["seq"] == 0 {
            bail!(
                "--dim seq={}: {} takes 1 to {max_seq} positions (its max_seq)",
                b.dims["seq"],
                a.model
            );
        }
    }
    if let Some((name, _)) = b.dims.iter().find(|(_, &v)| v == 0) {
        bail!("--dim {name}=0: a dimension must be at least 1");
    }
    let symbolic = g.symbolic_dims();
    for name in b.dims.keys() {
        if !symbolic.contains(name) {
            let have = if symbolic.is_empty() {
                "it has none (every input shape is fixed)".to_string()
            } else {
                format!(
                    "its symbolic dims are: {}",
                    symbolic.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            bail!("--dim {name}: the model has no symbolic dimension {name:?}; {have}");
        }
    }
    for (name, vals) in &a.values {
        let Some((_, vt)) = g.inputs.iter().find(|(n, _)| n == name) else {
            bail!(
                "--value {name}: the model has no input {name:?} (inputs: {})",
                g.inputs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            );
        };
        let rank = vt.dims.as_ref().map(|d| d.len());
        let shape = match (rank, vals.len()) {
            (Some(0), 1) => vec![],
            (Some(1) | None, n) => vec![n],
            (r, n) => bail!(
                "--value {name}: the input has rank {}; --value gives scalars (rank 0) and vectors (rank 1), here {n} value{}",
                r.map_or("unknown".into(), |r| r.to_string()),
                if n == 1 { "" } else { "s" }
            ),
        };
        let t = splitup_tensor::Tensor::from_f64_as(vt.dtype, shape, vals)
            .map_err(|e| anyhow::anyhow!("--value {name}: {e}"))?;
        b.values.insert(name.clone(), t);
    }
    // ONNX Runtime folds constants and answers for ops without a shape rule;
    // without it, inference uses its rules alone (enough for generated models).
    if !a.model.starts_with('@') {
        match splitup_exec::OrtEval::evaluator() {
            Ok(e) => b.eval = e,
            Err(e) => {
                eprintln!("note: shape inference uses its built-in rules only ({e}); real models may need ONNX Runtime")
            }
        }
    }
    for name in b.shapes.keys() {
        if !g.inputs.iter().any(|(n, _)| n == name) {
            bail!(
                "--shape {name}: the model has no input {name:?} (inputs: {})",
                g.inputs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok((g, b))
}

/// Bytes crossing the boundary after each task: values made at or before
/// it and used after it, each counted once.
fn cut_after(m: &Manifest) -> Vec<u64> {
    let pos: BTreeMap<u64, usize> = m.tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    (0..m.tasks.len())
        .map(|k| {
            let mut seen = std::collections::HashSet::new();
            m.connections
                .iter()
                .filter(|c| c.source_task_id != 0 && c.destination_task_id != 0)
                .filter(|c| pos[&c.source_task_id] <= k && pos[&c.destination_task_id] > k)
                .filter(|c| seen.insert((c.source_task_id, c.source_output_index)))
                .map(|c| c.bytes)
                .sum()
        })
        .collect()
}

pub fn print_plan(m: &Manifest) {
    let cuts = cut_after(m);
    let with_nodes = m.tasks.iter().any(|t| t.node.is_some());
    println!(
        "{:>5} {:>6} {:>11} {:>11} {:>11} {:>13} {:>12} {:>12}{}",
        "task",
        "ops",
        "weights",
        "activations",
        "memory",
        "compute units",
        "inputs from",
        "cut after",
        if with_nodes { "  node" } else { "" }
    );
    for (t, cut) in m.tasks.iter().zip(&cuts) {
        let deps: Vec<String> = m
            .connections
            .iter()
            .filter(|c| c.destination_task_id == t.id && c.source_task_id != 0)
            .map(|c| c.source_task_id.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let deps = if deps.is_empty() {
            "user".to_string()
        } else {
            deps.join(",")
        };
        let node = t
            .node
            .map(|n| format!("  #{n} ({})", human(m.budget.capacities[n])))
            .unwrap_or_default();
        println!(
            "{:>5} {:>6} {:>11} {:>11} {:>11} {:>13} {:>12} {:>12}{node}",
            t.id,
            t.ops,
            human(t.weight_bytes),
            human(t.activation_bytes),
            human(t.vram_requirement),
            t.compute_units,
            deps,
            human(*cut)
        );
    }
    let total_cu: u64 = m.tasks.iter().map(|t| t.compute_units).sum();
    let max_mem = m.tasks.iter().map(|t| t.vram_requirement).max().unwrap_or(0);
    println!(
        "{}; largest needs {}; {}; {} passed between tasks per run",
        plural(m.tasks.len() as u64, "task"),
        human(max_mem),
        plural(total_cu, "compute unit"),
        human(m.cut_bytes)
    );
    for (node, parts) in &m.splits {
        println!("split vertically: {node} into {parts} column slices joined by a Concat");
    }
}

fn partition_options(a: &PartitionArgs) -> Options {
    let capacities = match (&a.nodes, a.vram) {
        (Some(n), _) => n.clone(),
        (None, Some(v)) => vec![v],
        (None, None) => unreachable!("clap requires --vram or --nodes"),
    };
    Options {
        capacities,
        overhead_pct: a.overhead,
        vertical_split: !a.no_vertical_split,
    }
}

pub fn partition(a: PartitionArgs) -> Result<i32> {
    let (g, b) = load_model(&a.model)?;
    let opts = partition_options(&a);
    let pb = bar(g.nodes.len() as u64, "partition");
    let p = partition::partition_with_progress(&g, &b, &opts, &mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    });
    pb.finish_and_clear();
    let p = match p {
        Ok(p) => p,
        Err(e) => {
            let floor = partition::smallest_budget(&g, &b, &opts).ok().flatten();
            let hint = floor
                .map(|f| {
                    format!(
                        "\nthe smallest budget that partitions this model{} is {} ({f} bytes)",
                        if opts.vertical_split {
                            ""
                        } else {
                            " without vertical splits"
                        },
                        human(f)
                    )
                })
                .unwrap_or_default();
            bail!("{e}{hint}");
        }
    };
    let write_files = !a.dry_run && g.is_materialised();
    let name = std::path::Path::new(&a.model.model)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let files = plan::build(&p, name.trim_start_matches('@'), &b, &opts, write_files)?;
    print_plan(&files.manifest);
    if let (false, Some(dir)) = (a.dry_run, &a.output) {
        runner::write_plan(dir, &files)?;
        if write_files {
            println!("plan written to {}", dir.display());
        } else {
            println!(
                "weights are described by shape only: wrote {} alone (no task files) to {}",
                plan::MANIFEST_FILE,
                dir.display()
            );
        }
    }
    Ok(0)
}

fn progress_events(pb: &ProgressBar) -> impl Fn(Event) + Sync + '_ {
    move |e| {
        if let Event::Finished(..) = e {
            pb.inc(1)
        }
    }
}

pub fn run_plan(a: RunPlanArgs) -> Result<i32> {
    let m = runner::load_manifest(&a.plan)?;
    let inputs = read_inputs(&a.inputs)?;
    runner::check_inputs(&m.inputs, &inputs)?;
    let rt = OrtRuntime::new(a.threads)?;
    let pb = bar(m.tasks.len() as u64, "load");
    let mut sessions = runner::prepare_plan(&a.plan, &m, &rt, a.parallel, &|_| pb.inc(1))?;
    pb.finish_and_clear();
    let pb = bar(m.tasks.len() as u64, "run");
    let report = runner::execute(&m, &mut sessions, &inputs, a.parallel, &progress_events(&pb))?;
    pb.finish_and_clear();
    for t in &report.tasks {
        println!(
            "task {:>4}: {:>9.2} ms, received {} from other tasks",
            t.id,
            t.elapsed.as_secs_f64() * 1e3,
            human(t.bytes_from_tasks)
        );
    }
    println!(
        "{} in {:.2} ms (up to {} at once); {} passed between tasks",
        plural(report.tasks.len() as u64, "task"),
        report.elapsed.as_secs_f64() * 1e3,
        report.max_concurrency,
        human(report.passed_bytes)
    );
    for p in write_outputs(&a.output, &report.outputs)? {
        println!("wrote {}", p.display());
    }
    Ok(0)
}

/// Input specs of a whole model for the given tensors: declared dtype, and
/// the given shape, which must agree with every fixed dimension.
fn model_specs(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<TensorSpec>> {
    g.inputs
        .iter()
        .map(|(name, vt)| {
            let t = inputs
                .get(name)
                .with_context(|| format!("missing input {name:?} ({})", vt.dtype))?;
            if let Some(dims) = &vt.dims {
                let fixed_ok = dims.len() == t.shape.len()
                    && dims
                        .iter()
                        .zip(&t.shape)
                        .all(|(d, &v)| !matches!(d, Dim::Fixed(f) if *f != v));
                if !fixed_ok {
                    bail!(
                        "input {name:?} has shape {:?}, but the model declares {:?}",
                        t.shape,
                        dims
                    );
                }
            }
            Ok(TensorSpec {
                name: name.clone(),
                dimensions: vec![],
                shape: t.shape.iter().map(|&d| d as u64).collect(),
                dtype: vt.dtype.name().into(),
            })
        })
        .collect()
}

pub fn run(a: RunArgs) -> Result<i32> {
    let (g, _) = load_model(&a.model)?;
    if !g.is_materialised() {
        bail!(
            "{} has weights described by shape only; it can be partitioned but not run",
            a.model.model
        );
    }
    let inputs = read_inputs(&a.inputs)?;
    let specs = model_specs(&g, &inputs)?;
    let rt = OrtRuntime::new(a.threads)?;
    let mut session = runner::prepare_model(&g, &rt)?;
    let t0 = Instant::now();
    let outputs = runner::run_model(session.as_mut(), &specs, &inputs)?;
    println!(
        "ran {} ops in {:.2} ms",
        g.nodes.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    for p in write_outputs(&a.output, &outputs)? {
        println!("wrote {}", p.display());
    }
    Ok(0)
}

pub fn generate(a: GenerateArgs) -> Result<i32> {
    let c = transformer_config(&a.shape);
    let g = transformer(&c).map_err(anyhow::Error::msg)?;
    use prost::Message;
    let bytes = g.to_proto(true).encode_to_vec();
    if bytes.len() as u64 >= splitup_graph::model::MODEL_BYTES_MAX {
        bail!("a model of {} cannot be one ONNX file (protobuf's 2 GiB limit); partition it directly, e.g. `splitup partition @llama-70b --vram 12GiB --dry-run`", human(bytes.len() as u64));
    }
    std::fs::write(&a.output, &bytes).with_context(|| format!("cannot write {}", a.output.display()))?;
    println!(
        "wrote {} ({}, {}, {})",
        a.output.display(),
        plural(c.layers as u64, "layer"),
        plural(c.parameters(), "parameter"),
        human(bytes.len() as u64)
    );
    Ok(0)
}

/// The demos' plan: batch 1 and `seq` tokens, with a budget of weights /
/// `tasks` (which cannot hold the model in fewer tasks), raised to the
/// activation floor where activations dominate.
pub fn demo_plan(g: &Graph, seq: usize, tasks: u64) -> Result<(u64, plan::PlanFiles)> {
    if tasks < 2 {
        bail!("--tasks must be at least 2");
    }
    let mut b = Bindings::default();
    b.dims.insert("batch".into(), 1);
    b.dims.insert("seq".into(), seq);
    let budget = (g.weight_bytes() / tasks).max(partition::activation_floor(g, &b, 10)?);
    let opts = Options::uniform(budget);
    let p = partition::partition(g, &b, &opts)?;
    let files = plan::build(&p, "demo-transformer", &b, &opts, true)?;
    Ok((budget, files))
}

pub fn demo(a: DemoArgs) -> Result<i32> {
    let c = transformer_config(&a.shape);
    if a.seq == 0 || a.seq > c.max_seq {
        bail!("--seq must be between 1 and --max-seq ({})", c.max_seq);
    }
    let g = transformer(&c).map_err(anyhow::Error::msg)?;
    println!(
        "model: generated transformer, {}, hidden {}, {} ({} KV), vocabulary {}, {}, {} of weights (seed {})",
        plural(c.layers as u64, "layer"),
        c.hidden,
        plural(c.heads as u64, "head"),
        c.kv_heads,
        c.vocab,
        plural(c.parameters(), "parameter"),
        human(g.weight_bytes()),
        c.seed
    );
    let (budget, files) = demo_plan(&g, a.seq, a.tasks)?;
    println!("budget: {} per node\n", human(budget));
    print_plan(&files.manifest);
    let tmp;
    let dir = match &a.output {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let plan_dir = dir.join("plan");
    runner::write_plan(&plan_dir, &files)?;
    let m = runner::load_manifest(&plan_dir)?;
    let rt = OrtRuntime::new(1)?;
    let mut sessions = runner::prepare_plan(&plan_dir, &m, &rt, 2, &|_| {})?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.input_seed);
    let ids: Vec<i64> = (0..a.seq).map(|_| rng.random_range(0..c.vocab as i64)).collect();
    let inputs: BTreeMap<String, Tensor> = [("input_ids".to_string(), Tensor::from_i64(vec![1, a.seq], &ids)?)].into();
    println!("\ninput: {} token ids (input seed {})", a.seq, a.input_seed);
    let report = runner::execute(&m, &mut sessions, &inputs, 4, &|_| {})?;
    let mut whole = runner::prepare_model(&g, &rt)?;
    let t0 = Instant::now();
    let unsplit = runner::run_model(whole.as_mut(), &m.inputs, &inputs)?;
    let unsplit_time = t0.elapsed();
    println!(
        "split run:   {}, {:.2} ms, up to {} at once, {} passed between tasks (planned {})",
        plural(report.tasks.len() as u64, "task"),
        ms(report.elapsed),
        report.max_concurrency,
        human(report.passed_bytes),
        human(m.cut_bytes)
    );
    println!("unsplit run: 1 model,  {:.2} ms", ms(unsplit_time));
    let mut code = 0;
    for ((name, split), (_, whole)) in report.outputs.iter().zip(&unsplit) {
        let (s, w) = (split.to_f64_vec(), whole.to_f64_vec());
        let max_abs = s.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        match allclose(split, whole, Tolerance::PARTITION) {
            Ok(()) => println!(
                "output {name} {:?}: split equals unsplit (max |diff| {max_abs:.2e}, within rtol 1e-4 / atol 1e-5)",
                split.shape
            ),
            Err(e) => {
                println!("output {name}: split and unsplit DIFFER: {e}");
                code = 3;
            }
        }
    }
    if let Some(d) = &a.output {
        let outs = write_outputs(&d.join("outputs"), &report.outputs)?;
        println!(
            "plan in {}, outputs in {}",
            plan_dir.display(),
            outs[0].parent().unwrap().display()
        );
    }
    Ok(code)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn sim(a: SimArgs) -> Result<i32> {
    use splitup_sim::Strategy;
    for (name, v) in [
        ("--crash-frac", a.crash_frac),
        ("--slow-frac", a.slow_frac),
        ("--partition-frac", a.partition_frac),
        ("--strategy-frac", a.strategy_frac),
        ("--q", a.q),
        ("--collude", a.collude),
        ("--p", a.p),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} must be between 0 and 1, not {v}");
        }
    }
    if a.nodes < 2 || a.executions == 0 {
        bail!("a simulation needs at least 2 nodes and 1 execution");
    }
    let strategies: Vec<Strategy> = if a.strategy == "all" {
        Strategy::ALL.to_vec()
    } else {
        vec![a
            .strategy
            .parse::<Strategy>()
            .map_err(|e| anyhow::anyhow!("--strategy: {e}, or all"))?]
    };
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let params = splitup_protocol::Params {
        challenge_ppm: (a.p * 1e6).round() as u64,
        collusion_ppm: splitup_protocol::Params::default().collusion_ppm,
        ..Default::default()
    };
    let check_every = a
        .check_every
        .unwrap_or(if (a.nodes as u64) * (a.executions as u64) <= 1_000_000 {
            1
        } else {
            1000
        });
    let base = splitup_sim::Config {
        seed,
        nodes: a.nodes,
        executions: a.executions,
        crash_frac: a.crash_frac,
        slow_frac: a.slow_frac,
        partition_frac: a.partition_frac,
        strategy_frac: a.strategy_frac,
        q: a.q,
        collude_frac: a.collude,
        compute_cost_pct: a.compute_cost_pct,
        submit_every_ms: a.submit_every_ms.max(1),
        params,
        check_every,
        ..Default::default()
    };
    println!(
        "seed {seed} (replay with --seed {seed}); {}, {} of a 4-task DAG, one every {} ms; strategy fraction {}, q = {}, colluding {}; compute costs {} % of a task's fee; money checked every {}",
        plural(a.nodes as u64, "node"),
        plural(a.executions as u64, "execution"),
        a.submit_every_ms.max(1),
        a.strategy_frac,
        a.q,
        a.collude,
        a.compute_cost_pct,
        if check_every == 1 { "step".to_string() } else { format!("{check_every} steps") }
    );
    let usdc = |m: u64| m as f64 / 1e6;
    let mut rows = Vec::new();
    for (k, &strategy) in strategies.iter().enumerate() {
        let cfg = splitup_sim::Config {
            strategy,
            ..base.clone()
        };
        let pb = bar(a.executions as u64, strategy.name());
        let wall = Instant::now();
        let result = splitup_sim::run(&cfg, &mut |done, _| pb.set_position(done));
        pb.finish_and_clear();
        let s = match result {
            Ok(s) => s,
            Err(f) => {
                eprintln!("error ({strategy}): {f}");
                return Ok(1);
            }
        };
        if strategies.len() > 1 {
            if k == 0 {
                print_security(&s);
            }
            let failed: u64 = s.failed.values().sum();
            println!(
                "{strategy}: {} of {} completed{}, {}, {} caught, honest stake lost {:.2} USDC, {:.2} s",
                s.completed,
                s.executions,
                if failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                },
                plural(s.disputes, "dispute"),
                plural(s.frauds_caught, "fraud"),
                usdc(s.honest_stake_lost),
                wall.elapsed().as_secs_f64()
            );
            rows.push(s.strategy_row().cloned().expect("every run has its strategy's row"));
            continue;
        }
        println!(
            "completed {} of {} ({}) in {:.1} s of virtual time, {:.2} s of wall time",
            s.completed,
            plural(s.executions, "execution"),
            plural(s.task_results, "task result"),
            s.virtual_ms as f64 / 1e3,
            wall.elapsed().as_secs_f64()
        );
        for (reason, n) in &s.failed {
            println!("failed: {n} ({reason})");
        }
        println!(
            "state machine: {} in {:.3} s = {:.0} instructions/s ({:.0}/s without the {}, which took {:.3} s)",
            plural(s.instructions, "instruction"),
            s.ledger_time.as_secs_f64(),
            s.instructions_per_second(),
            s.instructions_per_second_without_vrf(),
            plural(s.vrf_proofs, "VRF proof"),
            s.vrf_time.as_secs_f64()
        );
        println!(
            "challenges: {} of {} results ({:.2}%; p = {}); validation compute overhead {:.4}",
            s.challenges,
            s.task_results,
            100.0 * s.challenges as f64 / s.task_results.max(1) as f64,
            a.p,
            s.validation_overhead()
        );
        println!(
            "disputes: {} ({} with no validator on record): {}",
            s.disputes,
            s.disputes_without_validator,
            s.verdicts
                .iter()
                .map(|(v, n)| format!("{n} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "bad results: {}, {} caught, {} completed and paid; {} slashes totalling {:.2} USDC",
            s.bad_results,
            s.frauds_caught,
            s.frauds_undetected,
            s.slashes,
            usdc(s.slashed)
        );
        let r = &s.refused;
        if *r != Default::default() {
            println!(
                "refused: {} URIs not naming the commitment (ledger), {} blobs under another name and {} reads by unsealed validators (store), {} results without their blob and {} reveals not matching the seal (shell)",
                r.uri_not_commitment, r.store_name_mismatch, r.store_read_unsealed, r.result_blob_missing, r.reveal_seal_mismatch
            );
        }
        if s.cheater_nodes > 0 {
            println!(
                "cheating nodes: {}, {} ended with a loss",
                s.cheater_nodes, s.cheaters_net_loss
            );
        }
        println!(
            "honest stake lost: {:.2} USDC ({:.2} in committees the cartel captured; {:.2} more in absent penalties while down); reassignments: {}; nodes marked unresponsive: {}",
            usdc(s.honest_stake_lost),
            usdc(s.honest_stake_lost_to_cartel),
            usdc(s.honest_absent_penalties),
            s.reassignments,
            s.nodes_marked_unresponsive
        );
        println!(
            "fees and rewards paid to nodes: {:.2} USDC; compute spent: {:.2} USDC",
            usdc(s.fees_paid),
            usdc(s.compute_spent)
        );
        if let Some(first) = &s.validator_also_assigned_first {
            println!(
                "protocol defect seen {} time(s): an unsealed validator was assigned a task of the execution it validates; first: {first}",
                s.validator_also_assigned
            );
        }
        let d = &s.shares;
        if d.stake_share > 0.0 {
            println!(
                "cartel: {:.2}% of the stake; {} of {} validations ({:.2}%, its share of the eligible stake {:.2}%), {} of {} committee seats ({:.2}%, {:.2}%), {} committees captured",
                100.0 * d.stake_share,
                d.validators.cartel,
                d.validators.draws,
                100.0 * d.validators.share(),
                100.0 * d.validators.expected_share(),
                d.seats.cartel,
                d.seats.draws,
                100.0 * d.seats.share(),
                100.0 * d.seats.expected_share(),
                d.committees_captured
            );
            for (t, v) in d.validators_by_task.iter().enumerate() {
                println!(
                    "  task {}: the cartel validated {} of {} ({:.2}%, its share of the eligible stake {:.2}%)",
                    t + 1,
                    v.cartel,
                    v.draws,
                    100.0 * v.share(),
                    100.0 * v.expected_share()
                );
            }
        }
        print_security(&s);
        print!("\n{}", splitup_sim::format_rows(&s.groups));
        if a.catch_table {
            println!(
                "\n{:>8} {:>8} {:>10} {:>16} {:>26}",
                "after N", "nodes", "caught", "1-(1-p(1-r))^N", "with captured committees"
            );
            for r in splitup_sim::catch_table(&s, &cfg, &[1, 10, 50, 100]) {
                println!(
                    "{:>8} {:>8} {:>10.4} {:>16.4} {:>26.4}",
                    r.after, r.nodes, r.measured, r.expected, r.expected_with_committee
                );
            }
        }
    }
    if strategies.len() > 1 {
        print!("\n{}", splitup_sim::format_rows(&rows));
    }
    Ok(0)
}

/// The security condition per task of the model, with the real fee, reward and slash.
fn print_security(s: &splitup_sim::Summary) {
    for r in &s.security {
        println!(
            "security, task {}: C = {:.4} USDC, R = {:.4}, S = {:.0}, p = {}, r = {:.3}: p(1-r)(R+S) - C = {:.3} USDC ({}); a lazy result saves {:.4} USDC of compute and costs {:.3} USDC in expectation",
            r.task,
            r.cost as f64 / 1e6,
            r.reward as f64 / 1e6,
            r.slash as f64 / 1e6,
            r.p,
            r.r,
            r.margin_usdc,
            if r.holds { "holds" } else { "FAILS" },
            r.compute as f64 / 1e6,
            r.compute as f64 / 1e6 - r.cheat_gain_usdc
        );
    }
}
