//! `splitup`: partition ONNX models into memory-bounded tasks and run them.
//!
//! The binary is the command-line definition and glue; the logic lives in
//! the `splitup-graph`, `splitup-tensor` and `splitup-exec` libraries.
//!
//! Exit codes: 0 success; 1 the command failed (the message says why);
//! 2 the command line is invalid; 3 a split run disagreed with the unsplit run.

mod commands;
mod config;
mod demo_net;
mod network;
mod util;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "splitup",
    version,
    about = "Run ML models that are too large for one GPU as a DAG of tasks that each fit.",
    long_about = "SplitUp partitions an ONNX model into tasks whose weights plus peak activations fit a memory budget, \
writes them as a portable plan (ONNX graphs + safetensors weights + a JSON manifest, all BLAKE3-addressed), and runs the plan's task DAG.\n\n\
Start with `splitup demo`.\n\n\
Network commands find the ledger and the key file from, first found wins: the flag (--ledger, --key); the environment \
(SPLITUP_LEDGER, SPLITUP_KEY); the config file SPLITUP_HOME/config.toml (lines `ledger = \"http://HOST:PORT\"` and \
`key = \"/path/to/key.json\"`); the defaults http://127.0.0.1:7878 and SPLITUP_HOME/key.json (written by `splitup keys new`). \
SPLITUP_HOME defaults to $XDG_CONFIG_HOME/splitup, else ~/.config/splitup.\n\n\
--json (on the commands that report) prints one JSON document on stdout and everything else on stderr; \
the fields are in docs/cli-json.md.\n\n\
Exit codes: 0 success, 1 failure, 2 invalid command line, 3 split and unsplit outputs disagree."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a ledger and 4 nodes here, deploy a transformer split into ≥ 4 tasks, run inferences, show what happened.
    Demo(DemoArgs),
    /// Partition a model into tasks that fit a memory budget and write the plan.
    Partition(PartitionArgs),
    /// Run a plan's task DAG on this machine (ready tasks run concurrently).
    RunPlan(RunPlanArgs),
    /// Run a whole (unsplit) model on this machine, for comparison.
    Run(RunArgs),
    /// Write a generated decoder-only transformer (seeded weights) as an ONNX file.
    Generate(GenerateArgs),
    /// Simulate a whole network against the protocol's rules (deterministic; replays from --seed).
    Sim(SimArgs),
    /// The embedded ledger (the network's rules behind HTTP, durable in SQLite).
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Key files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Development networks only (ledger start --dev): mint test USDC to a key.
    Faucet(FaucetArgs),
    /// Mint USDC with the network's mint authority key (public networks: --mint-authority).
    Mint(MintArgs),
    /// Show a key's balance (and its node, if it is one).
    Balance(KeyedArgs),
    /// List the nodes the ledger knows.
    Nodes(LedgerUrl),
    /// List the deployed models: id, name, tasks, whether active, owner.
    Models(LedgerUrl),
    /// Partition a model, upload its tasks and register it on the ledger.
    Deploy(DeployArgs),
    /// Deactivate a model you deployed: new executions are refused, those in progress finish.
    Undeploy(UndeployArgs),
    /// Ask for a node's stake back: it waits out the lockup, then `splitup withdraw` returns it.
    Unstake(UnstakeArgs),
    /// Return a node's unstaked USDC to its balance once the lockup has passed.
    Withdraw(KeyedArgs),
    /// Submit an input to a deployed model; prints the execution id.
    Submit(SubmitArgs),
    /// Show an execution (per task: state, node, attempts, timeouts, challenge and verdict), or the ledger and its recent executions.
    Status(StatusArgs),
    /// Download a completed execution's outputs as .npy files.
    Fetch(FetchArgs),
    /// Run a GPU node.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub keyed: KeyedArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Memory of every node, e.g. 12GiB.
    #[arg(long, value_name = "SIZE", value_parser = util::parse_size)]
    pub vram: u64,
    /// A representative input for calibrating how far honest results may
    /// differ across hardware (one per model input; without them, seeded
    /// random inputs are used: floats in [-1, 1), integers 0 or 1). Each
    /// task is run here at fp32, fp16 and bf16 and ONNX Runtime's
    /// optimisation levels, and the spread, times a safety factor of 4, is
    /// the tolerance the committee judges disputes by.
    #[arg(long = "calibration-input", value_name = "NAME=FILE.npy", value_parser = util::parse_pair)]
    pub calibration_inputs: Vec<(String, String)>,
}

#[derive(Args)]
pub struct UndeployArgs {
    #[command(flatten)]
    pub keyed: KeyedArgs,
    /// The model id (see `splitup models`); only its owner may deactivate it.
    pub model: u64,
}

#[derive(Args)]
pub struct UnstakeArgs {
    #[command(flatten)]
    pub keyed: KeyedArgs,
    /// USDC to unstake, e.g. 1900 or 0.5 (default: the whole stake).
    #[arg(long, value_name = "USDC", value_parser = util::parse_usdc)]
    pub amount: Option<u64>,
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub keyed: KeyedArgs,
    /// The model id printed by `splitup deploy`.
    pub model: u64,
    /// An input tensor, e.g. --input input_ids=ids.npy (repeat for each of the model's inputs).
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy", value_parser = util::parse_pair)]
    pub inputs: Vec<(String, String)>,
    /// Priority: each unit adds 0.05 USDC to the fee (paid to the treasury, at most 5 USDC).
    #[arg(long, default_value_t = 0)]
    pub priority: u64,
    /// Wait for the execution to finish, then fetch its outputs into -o.
    #[arg(long, requires = "output")]
    pub wait: bool,
    /// Where --wait writes the outputs, one .npy per model output.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// After fetching, do not tell the ledger (which otherwise lets the
    /// storage delete the execution's tensors at once; without it they are
    /// kept for the ledger's retention time).
    #[arg(long, requires = "wait")]
    pub keep: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub ledger: LedgerUrl,
    /// The execution to show; without it, the ledger and its recent executions.
    pub execution: Option<u64>,
}

#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub ledger: LedgerUrl,
    /// The execution id printed by `splitup submit`.
    pub execution: u64,
    /// Where to write the outputs, one .npy per model output.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// The submitter's key file: it signs the reads, and once the outputs
    /// are written they are acknowledged so the storage deletes the
    /// execution's tensors without waiting for the retention time. Default:
    /// SPLITUP_KEY, the config file's `key`, else SPLITUP_HOME/key.json if it
    /// exists; with --store and none of those, the store is read unsigned and
    /// nothing is acknowledged.
    #[arg(long, env = "SPLITUP_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Register, stake, pre-load tasks, heartbeat and execute assignments until SIGINT/SIGTERM.
    Start(NodeStartArgs),
    /// Internal: a task worker (the node daemon starts it; framed requests on stdin).
    #[command(hide = true)]
    Worker(NodeWorkerArgs),
}

#[derive(Args)]
pub struct NodeWorkerArgs {
    /// Memory ceiling (RLIMIT_DATA) in bytes; 0: none.
    #[arg(long)]
    pub memory: u64,
    /// Intra-op threads of the session.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Args)]
pub struct NodeStartArgs {
    #[command(flatten)]
    pub keyed: KeyedArgs,
    /// Memory this node offers.
    #[arg(long, value_name = "SIZE", value_parser = util::parse_size)]
    pub vram: u64,
    /// USDC to stake (default: what the VRAM requires: 1000 USDC + 100 USDC per GB on the default network).
    #[arg(long, value_name = "USDC")]
    pub stake: Option<u64>,
    /// Stake even when this node's VRAM runs no task of any deployed model
    /// (it earns nothing until a model it can run is deployed; it loads one while running).
    #[arg(long)]
    pub stake_idle: bool,
    /// Tasks to support: MODEL or MODEL/TASK (repeat); default every task of every model.
    #[arg(long, value_name = "MODEL[/TASK]")]
    pub specialise: Vec<String>,
    /// Threads per task session.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// TEST ONLY: return perturbed outputs (to exercise Proof of Sampling).
    #[arg(long, hide = true, conflicts_with = "jitter")]
    pub cheat: bool,
    /// TEST ONLY: scale outputs by 1 ± 1e-6, as different hardware would (honest, not bit-identical).
    #[arg(long, hide = true)]
    pub jitter: bool,
    /// TEST ONLY: attack the network: uri-swap, withhold, lazy-validator, grief or absent (a judge that never votes).
    #[arg(long, hide = true, value_name = "ATTACK")]
    pub test_attack: Option<String>,
    /// TEST ONLY: wait this many milliseconds before executing each task.
    #[arg(long, hide = true, default_value_t = 0)]
    pub delay_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0: any free port; the log says which).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Start the ledger: genesis and log in --data, operator keys beside it; replays the log on restart.
    Start(LedgerStartArgs),
    /// Print the ledger's HTTP API as an OpenAPI 3.1 description (JSON; what `GET /openapi.json` serves and docs/openapi.json holds).
    Openapi,
}

#[derive(Args)]
pub struct JsonFlag {
    /// Print JSON on stdout (fields in docs/cli-json.md); everything else goes to stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct LedgerStartArgs {
    /// Data directory (created if missing): ledger.sqlite, blobs/.
    #[arg(long, default_value = "splitup-data")]
    pub data: PathBuf,
    /// The operator's keys (the VRF beacon's; with --dev the mint's too),
    /// kept outside the data directory. Default: DATA-operator-keys beside it.
    #[arg(long, value_name = "DIR")]
    pub operator_keys: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: std::net::SocketAddr,
    /// Challenge probability p at genesis (ignored if the data directory already has a genesis).
    /// With --dev, 0 runs a network that verifies nothing (for trying things out).
    #[arg(long, default_value_t = 0.08)]
    pub p: f64,
    /// A development network on this machine: the mint key is kept with the
    /// operator's keys and `splitup faucet` mints on request. Loopback addresses only.
    #[arg(long, conflicts_with = "mint_authority")]
    pub dev: bool,
    /// A public network: the public key allowed to mint USDC (`splitup mint`
    /// with its key file, kept off this machine). Without it and without
    /// --dev, nobody can mint.
    #[arg(long, value_name = "PUBKEY", value_parser = util::parse_pubkey)]
    pub mint_authority: Option<splitup_protocol::Pubkey>,
    /// Signed instructions per second one client address may send (bursts of twice that).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_per_address: u32,
    /// Signed instructions per second one key may sign (bursts of four times that).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_per_key: u32,
    /// TEST ONLY: the rules panic after applying a transfer of exactly this many micro-USDC.
    #[arg(long, hide = true)]
    pub test_panic_on_transfer: Option<u64>,
    /// TEST ONLY: register models without checking their blobs against their declarations.
    #[arg(long, hide = true)]
    pub test_unchecked_registrations: bool,
    /// TEST ONLY: 2 s heartbeats and 10 s task timeouts at genesis.
    #[arg(long, hide = true)]
    pub test_timeouts: bool,
    /// Seconds to keep the input and intermediate tensors of a finished execution before deleting them.
    #[arg(long, default_value_t = 3600)]
    pub retention_secs: u64,
    /// Where blobs (weights, inputs, outputs) live: file:///DIR, s3://BUCKET/PREFIX,
    /// gs://BUCKET/PREFIX or http(s)://… (credentials from AWS_* / GOOGLE_*
    /// variables). Default: DATA/blobs. The ledger serves it at /v1/blobs either way.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Store a snapshot of the ledger state after this many log entries, so a
    /// restart replays only the entries after the newest snapshot.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
    /// Print one JSON line per event (listening, stopped) on stdout; logs go to stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a new key file (refuses to overwrite) and print its public key.
    New {
        /// Where to write it. Default: SPLITUP_HOME/key.json (~/.config/splitup/key.json),
        /// the key the network commands use when given none.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print the public key of a key file (default: the one the network commands use).
    Show {
        /// The key file. Default: SPLITUP_KEY, the config file's `key`, else SPLITUP_HOME/key.json.
        #[arg(long, env = "SPLITUP_KEY", value_name = "FILE")]
        key: Option<PathBuf>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Args)]
pub struct LedgerUrl {
    /// The ledger's URL: http(s)://HOST[:PORT], or HOST:PORT for http://HOST:PORT.
    /// Default: SPLITUP_LEDGER, the config file's `ledger`, else http://127.0.0.1:7878.
    #[arg(long, env = "SPLITUP_LEDGER", value_name = "URL", value_parser = util::parse_ledger_url)]
    pub ledger: Option<String>,
    /// Read and write blobs directly in this store (the ledger's own:
    /// s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, file:///DIR or http(s)://…;
    /// credentials from AWS_* / GOOGLE_* variables). Default: through the
    /// ledger's HTTP store API at LEDGER/v1/blobs.
    #[arg(long, env = "SPLITUP_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Print one JSON document on stdout (fields in docs/cli-json.md); notes
    /// and progress go to stderr. `node start`: one JSON line per log line.
    #[arg(long)]
    pub json: bool,
}

impl LedgerUrl {
    /// The ledger's URL: the flag or SPLITUP_LEDGER, the config file's, or the default.
    pub fn url(&self) -> anyhow::Result<String> {
        config::ledger(self.ledger.as_deref())
    }

    pub fn client(&self) -> anyhow::Result<splitup_node::Client> {
        splitup_node::Client::with_store(&self.url()?, self.store.as_deref())
    }
}

#[derive(Args)]
pub struct KeyedArgs {
    #[command(flatten)]
    pub ledger: LedgerUrl,
    /// The key file (from `splitup keys new`). Default: SPLITUP_KEY, the
    /// config file's `key`, else SPLITUP_HOME/key.json (~/.config/splitup/key.json).
    #[arg(long, env = "SPLITUP_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl KeyedArgs {
    /// The key file's path and its key (see [`config::read_key`]).
    pub fn key(&self) -> anyhow::Result<(PathBuf, splitup_protocol::Keypair)> {
        config::read_key(self.key.as_deref())
    }
}

#[derive(Args)]
pub struct FaucetArgs {
    #[command(flatten)]
    pub keyed: KeyedArgs,
    /// USDC to mint (default: the ledger's, 5000 USDC: enough to stake a node of up to 32 GB).
    #[arg(long, value_name = "USDC")]
    pub amount: Option<u64>,
}

#[derive(Args)]
pub struct MintArgs {
    /// The mint authority's key file.
    #[command(flatten)]
    pub keyed: KeyedArgs,
    /// Who receives the USDC.
    #[arg(long, value_name = "PUBKEY", value_parser = util::parse_pubkey)]
    pub to: splitup_protocol::Pubkey,
    /// USDC to mint.
    #[arg(long, value_name = "USDC")]
    pub amount: u64,
}

#[derive(Args)]
pub struct SimArgs {
    /// Number of GPU nodes.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Model executions to submit (each runs a 4-task DAG: 4 task executions).
    #[arg(long, default_value_t = 1000)]
    pub executions: usize,
    /// Seed of every random choice; the same seed replays the same run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fraction of nodes that crash mid-run.
    #[arg(long, default_value_t = 0.0)]
    pub crash_frac: f64,
    /// Fraction of nodes that compute 5× slower.
    #[arg(long, default_value_t = 0.0)]
    pub slow_frac: f64,
    /// Fraction of nodes cut off from the ledger for 2 minutes.
    #[arg(long, default_value_t = 0.0)]
    pub partition_frac: f64,
    /// What --strategy-frac of the nodes do: honest, lazy (garbage with
    /// probability --q), uri-swap (commit the honest hash, serve another
    /// blob), withhold (commit, never upload), lazy-validator (say "match"
    /// without computing), lazy-validator-reveal (reveal garbage instead),
    /// grief (dispute honest results), sybil (the same stake over many
    /// minimum-stake nodes claiming one task, cheating and judging for each
    /// other), tolerance (outputs just inside the tolerance, argmax tokens
    /// flipped with probability --q); or `all`: each in turn on the same
    /// seed, one table.
    #[arg(long, default_value = "honest")]
    pub strategy: String,
    /// Fraction of nodes following --strategy (for sybil: of the stake).
    #[arg(long, default_value_t = 0.1)]
    pub strategy_frac: f64,
    /// Per-result probability of cheating for lazy, sybil and tolerance.
    #[arg(long, default_value_t = 0.5)]
    pub q: f64,
    /// Fraction of nodes in a cartel with every cheater: as validators they
    /// confirm a cheater's result, on committees they vote for it.
    #[arg(long, default_value_t = 0.0)]
    pub collude: f64,
    /// Compute cost of one execution of a task (asserter, validator or
    /// committee member), as a percentage of the task's fee.
    #[arg(long, default_value_t = splitup_sim::COMPUTE_COST_PCT)]
    pub compute_cost_pct: u64,
    /// Challenge probability p (the design's default: 0.08).
    #[arg(long, default_value_t = 0.08)]
    pub p: f64,
    /// Virtual milliseconds between two submitted executions (each node
    /// holds at most 4 tasks: a few nodes and a fast rate saturate the network).
    #[arg(long, default_value_t = 50)]
    pub submit_every_ms: u64,
    /// Check money conservation every N steps (default: every step up to 10^6 node-executions, else every 1000).
    #[arg(long)]
    pub check_every: Option<u64>,
    /// Also print the catch rate of nodes returning bad results after 1, 10, 50 and 100 results
    /// (with --strategy lazy --q 1: nodes that cheat on every task).
    #[arg(long)]
    pub catch_table: bool,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// An ONNX file, or a generated model: @tiny (8 layers, runnable) or
    /// @llama-70b (80 layers, hidden 8192, weights described by shape only).
    #[arg(value_name = "MODEL")]
    pub model: String,
    /// Fix a named symbolic dimension, e.g. --dim batch=1 --dim seq=128.
    #[arg(long = "dim", value_name = "NAME=N", value_parser = util::parse_dim)]
    pub dims: Vec<(String, usize)>,
    /// Fix the whole shape of an input whose dims are unnamed, e.g. --shape images=1,3,224,224.
    #[arg(long = "shape", value_name = "INPUT=D0,D1,...", value_parser = util::parse_shape)]
    pub shapes: Vec<(String, Vec<usize>)>,
    /// Freeze a scalar or vector input to a value, e.g. --value sr=16000: it becomes a
    /// constant of the plan (no longer an input), so branches on it fold away and
    /// the model splits finer. Every execution of the plan then uses that value.
    #[arg(long = "value", value_name = "INPUT=V[,V...]", value_parser = util::parse_value)]
    pub values: Vec<(String, Vec<f64>)>,
    /// Replace weights stored as ConstantOfShape (as in ONNX's light/ test models) with seeded random ones.
    #[arg(long, value_name = "SEED")]
    pub randomize_weights: Option<u64>,
}

#[derive(Args)]
pub struct PartitionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Memory of every node, e.g. 256MiB, 12GiB.
    #[arg(long, value_name = "SIZE", value_parser = util::parse_size, required_unless_present = "nodes")]
    pub vram: Option<u64>,
    /// Memory of each node of a heterogeneous pool, in pipeline order, e.g. 4GiB,8GiB,8GiB.
    /// When the model fits a pipeline of these nodes (one task per node, in this
    /// order), that is the plan; otherwise tasks are planned for the largest node
    /// and each placed on the smallest node it fits (nodes may take several).
    #[arg(long, value_name = "SIZES", value_parser = util::parse_size, value_delimiter = ',', conflicts_with = "vram")]
    pub nodes: Option<Vec<u64>>,
    /// Runtime overhead added to weights + activations, in percent.
    #[arg(long, default_value_t = 10, value_name = "PCT")]
    pub overhead: u64,
    /// Do not split ops whose weight exceeds the budget into column slices.
    #[arg(long)]
    pub no_vertical_split: bool,
    /// Where to write the plan (created if missing).
    #[arg(short, long, value_name = "PLAN_DIR", required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,
    /// Print the plan without writing any file.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct RunPlanArgs {
    /// A directory written by `splitup partition`.
    #[arg(value_name = "PLAN_DIR")]
    pub plan: PathBuf,
    /// An input tensor, e.g. --input input_ids=ids.npy (repeat for each input).
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy", value_parser = util::parse_pair)]
    pub inputs: Vec<(String, String)>,
    /// Where to write the outputs, one .npy per model output.
    #[arg(short, long, value_name = "OUT_DIR")]
    pub output: PathBuf,
    /// Most tasks running at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Threads per task session (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// An input tensor, e.g. --input input_ids=ids.npy (repeat for each input).
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy", value_parser = util::parse_pair)]
    pub inputs: Vec<(String, String)>,
    /// Where to write the outputs, one .npy per model output.
    #[arg(short, long, value_name = "OUT_DIR")]
    pub output: PathBuf,
    /// Threads of the session (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Args, Clone)]
pub struct TransformerArgs {
    /// Decoder layers.
    #[arg(long, default_value_t = 8)]
    pub layers: usize,
    /// Hidden (model) width.
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    /// Attention heads (hidden must be a multiple).
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Key/value heads (grouped-query attention; heads must be a multiple).
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    /// Width of the feed-forward layer.
    #[arg(long, default_value_t = 172)]
    pub ffn: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 2048)]
    pub vocab: usize,
    /// Longest sequence (the model's input length when not fixed otherwise).
    #[arg(long, default_value_t = 64)]
    pub max_seq: usize,
    /// Position encoding.
    #[arg(long, default_value = "rotary", value_parser = ["rotary", "learned"])]
    pub positions: String,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub shape: TransformerArgs,
    /// Where to write the model.
    #[arg(short, long, value_name = "MODEL.onnx")]
    pub output: PathBuf,
}

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub shape: TransformerArgs,
    /// Sequence length of the demo input.
    #[arg(long, default_value_t = 32)]
    pub seq: usize,
    /// Split so that at least this many tasks are needed (budget = weights / tasks).
    #[arg(long, default_value_t = 4)]
    pub tasks: u64,
    /// Seed of the input token ids.
    #[arg(long, default_value_t = 1)]
    pub input_seed: u64,
    /// Keep the demo's files here (default: a temporary directory, removed after): with --local,
    /// the plan and the outputs; on the network, the ledger's data, the node keys, every
    /// process's log and each inference's outputs (DIR/outputs/execution-N/).
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Run on this machine only: split and unsplit runs in one process, no network.
    #[arg(long)]
    pub local: bool,
    /// Nodes to start (network mode): the tasks are cut into 3 groups of consecutive tasks,
    /// each node gets the VRAM of one group and runs only it. At least 8 (6 with --no-cheater):
    /// 2 per group, and the cheater's group also 2 honest judges for disputes.
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// Inferences to run (network mode); the demo runs up to 10 more while the cheater has not
    /// been drawn yet.
    #[arg(long, default_value_t = 3)]
    pub inferences: usize,
    /// Challenge probability p of the demo network. The demo checks every result (1) so that
    /// the cheater is caught the first time it runs or validates a task; a real network samples
    /// (the default ledger uses 0.08).
    #[arg(long, default_value_t = 1.0)]
    pub p: f64,
    /// Start only honest nodes (network mode). By default one node of the middle group cheats:
    /// it returns perturbed outputs, as asserter and as validator.
    #[arg(long)]
    pub no_cheater: bool,
}

impl Command {
    /// Whether `--json` was given to this command.
    fn json(&self) -> bool {
        match self {
            Command::Ledger(LedgerCommand::Start(a)) => a.json,
            Command::Keys(KeysCommand::New { json, .. } | KeysCommand::Show { json, .. }) => json.json,
            Command::Faucet(a) => a.keyed.ledger.json,
            Command::Mint(a) => a.keyed.ledger.json,
            Command::Balance(a) | Command::Withdraw(a) => a.ledger.json,
            Command::Nodes(a) | Command::Models(a) => a.json,
            Command::Deploy(a) => a.keyed.ledger.json,
            Command::Undeploy(a) => a.keyed.ledger.json,
            Command::Unstake(a) => a.keyed.ledger.json,
            Command::Submit(a) => a.keyed.ledger.json,
            Command::Status(a) => a.ledger.json,
            Command::Fetch(a) => a.ledger.json,
            Command::Node(NodeCommand::Start(a)) => a.keyed.ledger.json,
            _ => false,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if cli.command.json() {
        if let Err(e) = util::json_mode() {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
    let result = match cli.command {
        Command::Demo(a) if a.local => commands::demo(a),
        Command::Demo(a) => demo_net::run(a),
        Command::Partition(a) => commands::partition(a),
        Command::RunPlan(a) => commands::run_plan(a),
        Command::Run(a) => commands::run(a),
        Command::Generate(a) => commands::generate(a),
        Command::Sim(a) => commands::sim(a),
        Command::Ledger(LedgerCommand::Start(a)) => network::ledger_start(a),
        Command::Ledger(LedgerCommand::Openapi) => {
            print!("{}", splitup_ledger::openapi::spec_json());
            Ok(0)
        }
        Command::Keys(KeysCommand::New { output, .. }) => network::keys_new(output.as_deref()),
        Command::Keys(KeysCommand::Show { key, .. }) => network::keys_show(key.as_deref()),
        Command::Faucet(a) => network::faucet(a),
        Command::Mint(a) => network::mint(a),
        Command::Balance(a) => network::balance(a),
        Command::Nodes(a) => network::nodes(a),
        Command::Models(a) => network::models(a),
        Command::Deploy(a) => network::deploy(a),
        Command::Undeploy(a) => network::undeploy(a),
        Command::Unstake(a) => network::unstake(a),
        Command::Withdraw(a) => network::withdraw(a),
        Command::Submit(a) => network::submit(a),
        Command::Status(a) => network::status(a),
        Command::Fetch(a) => network::fetch(a),
        Command::Node(NodeCommand::Start(a)) => network::node_start(a),
        Command::Node(NodeCommand::Worker(a)) => Ok(splitup_exec::worker::serve(a.memory, a.threads)),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::exit(1);
        }
    }
}
