//! The OpenAPI description (`GET /openapi.json`, `docs/openapi.json`)
//! against the ledger it describes: the served description is the
//! checked-in one, every route of the router is described, the description
//! is valid OpenAPI (openapi-spec-validator), and real answers of a real
//! ledger on 127.0.0.1 match the schemas of their operations
//! (openapi-schema-validator). Both validators are the pip packages that
//! `.ci/run` installs; `tests/openapi_check.py` calls them.
//!
//! To regenerate `docs/openapi.json` after changing a handler's annotation
//! or an API type: `UPDATE_OPENAPI=1 cargo test -p splitup-ledger --test openapi`
//! (or `splitup ledger openapi > docs/openapi.json`).

use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};
use splitup_ledger::server::{serve_with, Config};
use splitup_protocol::crypto::{blob_request_message, to_hex};
use splitup_protocol::{Connection, Instruction, Keypair, ModelDef, OutputCheck, SignedTx, TaskDef, TensorSpec};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn checked_in() -> PathBuf {
    repo_root().join("docs/openapi.json")
}

const REGENERATE: &str = "UPDATE_OPENAPI=1 cargo test -p splitup-ledger --test openapi";

/// A development ledger on 127.0.0.1 in this process, its data in `dir`.
/// Registrations are not checked against blobs (a test setting), so a
/// model can be registered without real ONNX files.
fn start(dir: &Path) -> String {
    let cfg = Config {
        keys: dir.join("operator-keys"),
        data: dir.join("ledger"),
        listen: "127.0.0.1:0".parse().unwrap(),
        challenge_ppm: 0,
        dev: true,
        mint_authority: None,
        test_timeouts: true,
        retention_ms: 3_600_000,
        snapshot_every: 1000,
        store: None,
        limits: Default::default(),
        test_panic_on_transfer: None,
        test_unchecked_registrations: true,
        worker: None,
        upload_quota_node: splitup_ledger::blobs::UPLOAD_QUOTA_NODE,
        upload_quota_account: splitup_ledger::blobs::UPLOAD_QUOTA_ACCOUNT,
        orphan_ttl_ms: 3_600_000,
    };
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve_with(cfg, move |addr| {
            let _ = tx.send(addr);
        }))
        .unwrap();
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the ledger starts");
    format!("http://{addr}")
}

/// Runs `tests/openapi_check.py` with `args`; panics with its output unless it succeeds.
fn python_check(args: &[&Path], expect_ok: bool) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("ModuleNotFoundError") {
        panic!(
            "the OpenAPI validators are not installed: python3 -m pip install openapi-spec-validator==0.9.0 openapi-schema-validator==0.9.0 (as .ci/run does)\n{text}"
        );
    }
    assert_eq!(out.status.success(), expect_ok, "openapi_check.py {args:?}:\n{text}");
    text
}

#[test]
fn the_served_description_is_the_checked_in_one() {
    let d = tempfile::tempdir().unwrap();
    let url = start(d.path());
    let r = Client::new().get(format!("{url}/openapi.json")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let served = r.text().unwrap();
    assert_eq!(served, splitup_ledger::openapi::spec_json());
    let parsed: Value = serde_json::from_str(&served).expect("the served description is JSON");
    assert_eq!(parsed, splitup_ledger::openapi::spec());
    let path = checked_in();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &served).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    if file != served {
        let (a, b): (Value, Value) = (
            serde_json::from_str(&file).unwrap_or(Value::Null),
            serde_json::from_str(&served).unwrap(),
        );
        let mut diffs = Vec::new();
        diff("", &a, &b, &mut diffs);
        panic!(
            "docs/openapi.json is not what the ledger serves ({} differences; first: {:?}).\nRegenerate it: {REGENERATE}",
            diffs.len(),
            diffs.iter().take(5).collect::<Vec<_>>()
        );
    }
}

/// JSON pointers where `a` (the file) and `b` (the served description) differ.
fn diff(at: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(&p, u, v, out),
                    (None, _) => out.push(format!("{p} is new")),
                    (_, None) => out.push(format!("{p} is gone")),
                }
            }
        }
        _ if a != b => out.push(format!("{at} changed")),
        _ => {}
    }
}

/// (method, path) of every route `server::router` registers, read from its
/// source: each `.route("PATH", METHOD(..).METHOD(..)...)` call.
fn router_routes() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server.rs")).unwrap();
    let start = src.find("\nfn router(").expect("server.rs has fn router");
    let end = start + src[start..].find("\n}\n").expect("fn router ends");
    let body = &src[start..end];
    for other in [".nest(", ".merge(", ".route_service(", ".fallback(", ".nest_service("] {
        assert!(
            !body.contains(other),
            "router uses {other}: teach this test (and the OpenAPI description) about it"
        );
    }
    let mut routes = BTreeSet::new();
    for (i, _) in body.match_indices(".route(\"") {
        let rest = &body[i + ".route(\"".len()..];
        let path = &rest[..rest.find('"').unwrap()];
        // The call's arguments: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let args = &rest[..rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .unwrap()
            .0];
        let mut methods = 0;
        for m in ["get", "post", "put", "delete", "patch", "head", "options"] {
            for (j, _) in args.match_indices(&format!("{m}(")) {
                let before = args[..j].chars().next_back().unwrap_or(' ');
                if !(before.is_alphanumeric() || before == '_' || before == ':') {
                    routes.insert((m.to_string(), path.to_string()));
                    methods += 1;
                }
            }
        }
        assert!(methods > 0, "no method found for route {path}: {args}");
    }
    routes
}

fn described_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.clone(), path.clone()));
        }
    }
    ops
}

#[test]
fn every_route_is_described_and_nothing_else() {
    let routes = router_routes();
    assert!(routes.len() >= 17, "too few routes found in server.rs: {routes:?}");
    let described = described_operations(&splitup_ledger::openapi::spec());
    let undocumented: Vec<_> = routes.difference(&described).collect();
    let phantom: Vec<_> = described.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes without an OpenAPI operation: {undocumented:?}\nAnnotate the handler with #[utoipa::path(...)], list it in openapi::ApiDoc's paths(...), then: {REGENERATE}"
    );
    assert!(
        phantom.is_empty(),
        "described operations the router does not serve: {phantom:?}"
    );
}

#[test]
fn the_description_is_valid_openapi() {
    let d = tempfile::tempdir().unwrap();
    let generated = d.path().join("openapi.json");
    std::fs::write(&generated, splitup_ledger::openapi::spec_json()).unwrap();
    let out = python_check(&[Path::new("spec"), &generated], true);
    assert!(out.contains("valid OpenAPI 3.1"), "{out}");
}

/// One real answer, for the schema check.
struct Recorder {
    http: Client,
    url: String,
    answers: Vec<Value>,
}

impl Recorder {
    /// Sends `req` (for the operation `method` `template`), records its
    /// answer and returns its status and body.
    fn record(&mut self, method: &str, template: &str, req: RequestBuilder) -> (u16, Value) {
        self.record_with(method, template, req, Value::Null)
    }

    /// As [`Recorder::record`] for a request whose JSON body is `sent`
    /// (checked against the operation's request body schema too).
    fn record_with(&mut self, method: &str, template: &str, req: RequestBuilder, sent: Value) -> (u16, Value) {
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        let bytes = r.bytes().unwrap();
        let json = if content_type.as_deref() == Some("application/json") {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {template}: not JSON ({e})"))
        } else {
            Value::Null
        };
        self.answers.push(json!({
            "method": method,
            "path": template,
            "status": status,
            "content_type": content_type,
            "json": json,
            "request": sent,
        }));
        (status, json)
    }

    fn get(&mut self, template: &str, path: &str) -> (u16, Value) {
        let req = self.http.get(format!("{}{path}", self.url));
        self.record("get", template, req)
    }

    fn tx(&mut self, key: &Keypair, ix: Instruction) -> (u16, Value) {
        let (_, account) = self.get("/v1/accounts/{key}", &format!("/v1/accounts/{}", key.pubkey().hex()));
        let nonce = account["nonce"].as_u64().unwrap();
        self.send_tx(&SignedTx::sign(key, nonce, ix))
    }

    fn send_tx(&mut self, tx: &SignedTx) -> (u16, Value) {
        let req = self.http.post(format!("{}/v1/tx", self.url)).json(tx);
        self.record_with("post", "/v1/tx", req, serde_json::to_value(tx).unwrap())
    }

    fn faucet(&mut self, key: &Keypair, usdc: u64) -> (u16, Value) {
        let body = json!({ "to": key.pubkey().hex(), "amount_usdc": usdc });
        let req = self.http.post(format!("{}/v1/faucet", self.url)).json(&body);
        self.record_with("post", "/v1/faucet", req, body)
    }

    fn blob(&mut self, method: reqwest::Method, key: &Keypair, hash: &str) -> RequestBuilder {
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 60_000;
        let sig = key.sign(&blob_request_message(method.as_str(), hash, expires));
        self.http
            .request(method, format!("{}/v1/blobs/{hash}", self.url))
            .header("x-splitup-key", key.pubkey().hex())
            .header("x-splitup-expires", expires.to_string())
            .header("x-splitup-signature", to_hex(&sig))
    }
}

fn tensor(name: &str) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        shape: vec![1, 4],
        dtype: "float32".into(),
    }
}

/// A one-task model (user → task 1 → user) whose checks use every field.
fn model() -> ModelDef {
    let c = |s, d| Connection {
        source_task: s,
        destination_task: d,
        source_output: 0,
        dest_input: 0,
    };
    ModelDef {
        name: "openapi-test".into(),
        inputs: vec![tensor("x")],
        outputs: vec![tensor("y")],
        tasks: vec![TaskDef {
            vram: 1 << 20,
            compute_units: 10,
            inputs: vec![tensor("x")],
            outputs: vec![tensor("y")],
            weight_uri: String::new(),
            weight_hash: [1; 32],
            graph_hash: [2; 32],
            checks: vec![OutputCheck {
                name: "y".into(),
                rtol: 0.001,
                atol: 1e-5,
                miss_rate: 0.01,
                indices_of: None,
            }],
        }],
        connections: vec![c(0, 1), c(1, 0)],
    }
}

fn ok(what: &str, (status, body): (u16, Value)) -> Value {
    assert_eq!(status, 200, "{what}: {body}");
    body
}

/// Drives a real ledger through a model's life (faucet, registration, a
/// node, an execution, its result and blobs, an unstake) plus a set of
/// refusals, recording every answer; then checks each against the
/// description with a real validator, and checks that the validator
/// catches a schema that is wrong about one field.
#[test]
fn real_answers_match_their_schemas() {
    let d = tempfile::tempdir().unwrap();
    let url = start(d.path());
    let mut r = Recorder {
        http: Client::new(),
        url: url.clone(),
        answers: Vec::new(),
    };
    let (owner, node, user, stranger) = (
        Keypair::from_seed([11; 32]),
        Keypair::from_seed([12; 32]),
        Keypair::from_seed([13; 32]),
        Keypair::from_seed([14; 32]),
    );
    for k in [&owner, &node, &user] {
        ok("faucet", r.faucet(k, 5000));
    }
    let registered = ok("register model", r.tx(&owner, Instruction::RegisterModel(model())));
    assert!(
        registered["events"].to_string().contains("ModelRegistered"),
        "{registered}"
    );
    ok(
        "register node",
        r.tx(
            &node,
            Instruction::RegisterNode {
                vram: 1_000_000_000,
                supports: vec![(1, 1)],
            },
        ),
    );
    ok(
        "stake",
        r.tx(
            &node,
            Instruction::Stake {
                amount: 2000 * splitup_protocol::USDC,
            },
        ),
    );
    let input = b"the execution's input".to_vec();
    let input_hash = *blake3::hash(&input).as_bytes();
    let put = r
        .blob(reqwest::Method::PUT, &user, &to_hex(&input_hash))
        .body(input.clone());
    ok("upload input", r.record("put", "/v1/blobs/{hash}", put));
    let submitted = ok(
        "submit execution",
        r.tx(
            &user,
            Instruction::SubmitExecution {
                model: 1,
                priority: 0,
                input_commitment: input_hash,
            },
        ),
    );
    assert!(submitted["events"].to_string().contains("Assigned"), "{submitted}");
    let node_hex = node.pubkey().hex();
    let (_, _) = r.get("/v1/executions/{id}", "/v1/executions/1");
    let work = ok(
        "work",
        r.get("/v1/nodes/{key}/work", &format!("/v1/nodes/{node_hex}/work")),
    );
    assert_eq!(work.as_array().map(Vec::len), Some(1), "{work}");
    // A long-poll that times out: nothing changes within 50 ms.
    let version = r
        .http
        .get(format!("{url}/v1/nodes/{node_hex}/work"))
        .send()
        .unwrap()
        .headers()["x-splitup-version"]
        .to_str()
        .unwrap()
        .to_string();
    ok(
        "long-poll",
        r.get(
            "/v1/nodes/{key}/work",
            &format!("/v1/nodes/{node_hex}/work?after={version}&wait_ms=50"),
        ),
    );
    let output = b"the task's output".to_vec();
    let output_hash = *blake3::hash(&output).as_bytes();
    let put = r
        .blob(reqwest::Method::PUT, &node, &to_hex(&output_hash))
        .body(output.clone());
    let stored = ok("upload output", r.record("put", "/v1/blobs/{hash}", put));
    assert_eq!(stored["blake3"], to_hex(&output_hash));
    let done = ok(
        "submit result",
        r.tx(
            &node,
            Instruction::SubmitResult {
                execution: 1,
                task: 1,
                commitment: output_hash,
                output_uris: vec![format!("{url}/v1/blobs/{}", to_hex(&output_hash))],
            },
        ),
    );
    assert!(done["events"].to_string().contains("ExecutionCompleted"), "{done}");
    let get = r.blob(reqwest::Method::GET, &user, &to_hex(&output_hash));
    let (status, _) = r.record("get", "/v1/blobs/{hash}", get);
    assert_eq!(status, 200);
    ok(
        "request unstake",
        r.tx(
            &node,
            Instruction::RequestUnstake {
                amount: 100 * splitup_protocol::USDC,
            },
        ),
    );
    let account = ok(
        "account",
        r.get("/v1/accounts/{key}", &format!("/v1/accounts/{node_hex}")),
    );
    assert!(account["node"]["unstaking"].is_object(), "{account}");
    for (template, path) in [
        ("/v1/status", "/v1/status".to_string()),
        ("/v1/genesis", "/v1/genesis".into()),
        ("/v1/blockhashes", "/v1/blockhashes".into()),
        ("/v1/accounts/{key}", format!("/v1/accounts/{}", user.pubkey().hex())),
        (
            "/v1/accounts/{key}",
            format!("/v1/accounts/{}", stranger.pubkey().hex()),
        ),
        ("/v1/nodes", "/v1/nodes".into()),
        ("/v1/models", "/v1/models".into()),
        ("/v1/models/{id}", "/v1/models/1".into()),
        ("/v1/executions", "/v1/executions".into()),
        ("/v1/executions", "/v1/executions?limit=5".into()),
        ("/v1/executions/{id}", "/v1/executions/1".into()),
        ("/v1/disputes", "/v1/disputes".into()),
        ("/metrics", "/metrics".into()),
    ] {
        ok(&path, r.get(template, &path));
    }
    // Refusals: each must be declared, with its body's schema.
    let refusals: Vec<(u16, Value)> = vec![
        r.get("/v1/accounts/{key}", "/v1/accounts/ABC"),
        r.get("/v1/executions/{id}", "/v1/executions/99"),
        r.get("/v1/executions/{id}", "/v1/executions/x"),
        r.get("/v1/executions", "/v1/executions?limit=many"),
        r.get("/v1/models/{id}", "/v1/models/7"),
        r.get(
            "/v1/nodes/{key}/work",
            &format!("/v1/nodes/{}/work", stranger.pubkey().hex()),
        ),
        r.faucet(&stranger, 0),
        r.send_tx(&SignedTx::sign(&user, 0, Instruction::Heartbeat)),
        r.tx(
            &stranger,
            Instruction::Transfer {
                to: user.pubkey(),
                amount: 1,
            },
        ),
        {
            let mut forged = SignedTx::sign(&user, 0, Instruction::Withdraw);
            forged.signature[0] ^= 1;
            r.send_tx(&forged)
        },
        {
            let req = r.http.post(format!("{url}/v1/tx")).body("{}");
            r.record("post", "/v1/tx", req)
        },
        {
            let req = r.http.post(format!("{url}/v1/faucet")).body(" ".repeat(5000));
            r.record("post", "/v1/faucet", req)
        },
        {
            let req = r.http.get(format!("{url}/v1/blobs/{}", to_hex(&output_hash)));
            r.record("get", "/v1/blobs/{hash}", req)
        },
        {
            let get = r.blob(reqwest::Method::GET, &stranger, &to_hex(&output_hash));
            r.record("get", "/v1/blobs/{hash}", get)
        },
        {
            let put = r.blob(reqwest::Method::PUT, &stranger, &to_hex(&[9; 32])).body("x");
            r.record("put", "/v1/blobs/{hash}", put)
        },
    ];
    let statuses: Vec<u16> = refusals.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [400, 404, 400, 400, 404, 404, 400, 409, 402, 401, 400, 413, 401, 403, 403],
        "{refusals:?}"
    );

    let spec = d.path().join("openapi.json");
    std::fs::write(&spec, splitup_ledger::openapi::spec_json()).unwrap();
    let answers = d.path().join("answers.json");
    std::fs::write(&answers, serde_json::to_string(&r.answers).unwrap()).unwrap();
    let out = python_check(&[Path::new("answers"), &spec, &answers], true);
    eprintln!("{out}");

    // The check is not vacuous: a description wrong about one field of
    // one answer (the status's supply as a string) fails it.
    let mut wrong = splitup_ledger::openapi::spec();
    wrong["components"]["schemas"]["Status"]["properties"]["supply"] = json!({ "type": "string" });
    std::fs::write(&spec, serde_json::to_string(&wrong).unwrap()).unwrap();
    let out = python_check(&[Path::new("answers"), &spec, &answers], false);
    assert!(out.contains("GET /v1/status -> 200: at supply"), "{out}");
    // And one wrong about how a signed instruction carries its signer.
    let mut wrong = splitup_ledger::openapi::spec();
    wrong["components"]["schemas"]["SignedTx"]["properties"]["signer"] =
        json!({ "$ref": "#/components/schemas/Hex32" });
    std::fs::write(&spec, serde_json::to_string(&wrong).unwrap()).unwrap();
    let out = python_check(&[Path::new("answers"), &spec, &answers], false);
    assert!(out.contains("POST /v1/tx -> 200: request body at signer"), "{out}");
    // And one that forgets a field the ledger writes.
    let mut wrong = splitup_ledger::openapi::spec();
    wrong["components"]["schemas"]["WorkItem"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("attempt");
    std::fs::write(&spec, serde_json::to_string(&wrong).unwrap()).unwrap();
    let out = python_check(&[Path::new("answers"), &spec, &answers], false);
    assert!(out.contains("/v1/nodes/{key}/work -> 200"), "{out}");
}
