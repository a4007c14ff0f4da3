//! The ledger's blob API (`PUT/GET /v1/blobs/{hash}`) as real processes:
//! requests are signed, only nodes and funded accounts upload, only an
//! execution's parties read its tensors, a 1 GiB upload streams through the
//! ledger in bounded memory, and one user's acknowledgement never deletes a
//! blob another execution still refers to.

use splitup_ledger::keys;
use splitup_protocol::crypto::{blob_request_message, to_hex};
use splitup_protocol::Keypair;
use splitup_tensor::{allclose, npy, Tensor, Tolerance};
use std::io::Read;
use std::path::Path;

mod common;
use common::{bin, fund_key, ok, start_ledger, Proc};

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .unwrap()
}

fn get_json(url: &str, path: &str) -> serde_json::Value {
    http().get(format!("{url}{path}")).send().unwrap().json().unwrap()
}

fn faucet(url: &str, k: &Keypair, usdc: u64) {
    let r = http()
        .post(format!("{url}/v1/faucet"))
        .json(&serde_json::json!({ "to": k.pubkey().hex(), "amount_usdc": usdc }))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "faucet: {}", r.status());
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A blob request signed by `key`, valid until `expires` (ms since the epoch).
fn signed_until(
    method: reqwest::Method,
    url: &str,
    hash: &str,
    key: &Keypair,
    expires: u64,
) -> reqwest::blocking::RequestBuilder {
    let sig = key.sign(&blob_request_message(method.as_str(), hash, expires));
    http()
        .request(method, format!("{url}/v1/blobs/{hash}"))
        .header("x-splitup-key", key.pubkey().hex())
        .header("x-splitup-expires", expires.to_string())
        .header("x-splitup-signature", to_hex(&sig))
}

fn signed(method: reqwest::Method, url: &str, hash: &str, key: &Keypair) -> reqwest::blocking::RequestBuilder {
    signed_until(method, url, hash, key, now_ms() + 60_000)
}

/// Status and JSON answer of a request.
fn answer(r: reqwest::blocking::RequestBuilder) -> (u16, serde_json::Value) {
    let r = r.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(serde_json::Value::Null))
}

/// Status of a signed read by `key` (the body, when it succeeds, is checked against the name).
fn read_status(url: &str, hash: &str, key: &Keypair) -> u16 {
    let r = signed(reqwest::Method::GET, url, hash, key).send().unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        let body = r.bytes().unwrap();
        assert_eq!(
            blake3::hash(&body).to_hex().to_string(),
            hash,
            "a read returned other bytes"
        );
    }
    status
}

fn on_disk(dir: &Path, hash: &str) -> bool {
    dir.join("ledger/blobs").join(hash).exists()
}

fn staged_uploads(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("ledger/blobs/uploads"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn unsigned_badly_signed_expired_and_unfunded_uploads_are_refused_and_store_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir, &[]);
    let (alice, bob, pauper) = (keys::generate(), keys::generate(), keys::generate());
    faucet(&url, &alice, 1);
    faucet(&url, &bob, 1);
    let data = b"the weights of a task".to_vec();
    let hash = blake3::hash(&data).to_hex().to_string();
    let put = reqwest::Method::PUT;
    let refused = |(status, v): (u16, serde_json::Value), want: u16, what: &str| {
        assert_eq!(status, want, "{what}: {v}");
        assert!(
            v["error"].is_string() && v["code"].is_u64(),
            "{what}: not a JSON error: {v}"
        );
        v["code"].as_u64().unwrap()
    };
    // No signature at all.
    let r = http()
        .put(format!("{url}/v1/blobs/{hash}"))
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(refused((r.status().as_u16(), r.json().unwrap()), 401, "unsigned"), 1);
    // Alice's name, Bob's signature.
    let expires = now_ms() + 60_000;
    let sig = to_hex(&bob.sign(&blob_request_message("PUT", &hash, expires)));
    let forged = http()
        .put(format!("{url}/v1/blobs/{hash}"))
        .header("x-splitup-key", alice.pubkey().hex())
        .header("x-splitup-expires", expires.to_string())
        .header("x-splitup-signature", sig)
        .body(data.clone());
    refused(answer(forged), 401, "forged");
    // A signature for a read does not authorise a write, nor one for another blob.
    let sig = to_hex(&alice.sign(&blob_request_message("GET", &hash, expires)));
    let r = http()
        .put(format!("{url}/v1/blobs/{hash}"))
        .header("x-splitup-key", alice.pubkey().hex())
        .header("x-splitup-expires", expires.to_string())
        .header("x-splitup-signature", sig)
        .body(data.clone())
        .send()
        .unwrap();
    refused(
        (r.status().as_u16(), r.json().unwrap()),
        401,
        "a GET signature on a PUT",
    );
    let other = blake3::hash(b"other").to_hex().to_string();
    let sig = to_hex(&alice.sign(&blob_request_message("PUT", &other, expires)));
    let r = http()
        .put(format!("{url}/v1/blobs/{hash}"))
        .header("x-splitup-key", alice.pubkey().hex())
        .header("x-splitup-expires", expires.to_string())
        .header("x-splitup-signature", sig)
        .body(data.clone())
        .send()
        .unwrap();
    refused(
        (r.status().as_u16(), r.json().unwrap()),
        401,
        "another blob's signature",
    );
    // Expired, or valid for too long.
    let past = signed_until(put.clone(), &url, &hash, &alice, now_ms() - 1000).body(data.clone());
    refused(answer(past), 401, "expired");
    let far = signed_until(put.clone(), &url, &hash, &alice, now_ms() + 11 * 60_000).body(data.clone());
    refused(answer(far), 401, "expiring in 11 minutes");
    let garbled = http()
        .put(format!("{url}/v1/blobs/{hash}"))
        .header("x-splitup-key", alice.pubkey().hex())
        .header("x-splitup-expires", expires.to_string())
        .header("x-splitup-signature", "zz")
        .body(data.clone());
    refused(answer(garbled), 401, "a signature that is not hex");
    // A valid signature by a key with no funds and no node.
    let poor = signed(put.clone(), &url, &hash, &pauper).body(data.clone());
    assert_eq!(refused(answer(poor), 403, "unfunded"), 3);
    assert!(!on_disk(dir, &hash), "a refused upload was stored");
    assert_eq!(staged_uploads(dir), 0);
    // Content that does not match its name, from a funded key.
    let wrong = signed(put.clone(), &url, &other, &alice).body(data.clone());
    refused(answer(wrong), 400, "mismatched content");
    assert!(!on_disk(dir, &other));

    // A funded account uploads; while nothing refers to the blob, only it reads it.
    let (s, v) = answer(signed(put.clone(), &url, &hash, &alice).body(data.clone()));
    assert_eq!((s, v["bytes"].as_u64()), (200, Some(data.len() as u64)), "{v}");
    assert!(on_disk(dir, &hash));
    assert_eq!(read_status(&url, &hash, &alice), 200);
    assert_eq!(read_status(&url, &hash, &bob), 403);
    let r = http().get(format!("{url}/v1/blobs/{hash}")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401, "an unsigned read");
}

/// `size` deterministic bytes as a reader: byte `i` is byte `i % 8` of
/// splitmix64(`i / 8`), whatever the sizes of the reads.
struct Generator {
    offset: u64,
    size: u64,
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Read for Generator {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.size - self.offset) as usize;
        for (j, b) in buf[..n].iter_mut().enumerate() {
            let o = self.offset + j as u64;
            *b = (splitmix64(o / 8) >> ((o % 8) * 8)) as u8;
        }
        self.offset += n as u64;
        Ok(n)
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

#[test]
fn a_1_gib_upload_streams_through_the_ledger_in_bounded_memory() {
    const SIZE: u64 = 1 << 30;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (ledger, url) = start_ledger(dir, &[]);
    let pid = ledger.0.id();
    let user = keys::generate();
    faucet(&url, &user, 10);
    // The name first, streaming: the test never holds the blob either.
    let generator = || Generator { offset: 0, size: SIZE };
    let mut hasher = blake3::Hasher::new();
    let mut g = generator();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = g.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hash = hasher.finalize().to_hex().to_string();
    let before = peak_rss_kib(pid);
    let t = std::time::Instant::now();
    let body = reqwest::blocking::Body::sized(generator(), SIZE);
    let (s, v) = answer(signed(reqwest::Method::PUT, &url, &hash, &user).body(body));
    assert_eq!((s, v["bytes"].as_u64()), (200, Some(SIZE)), "{v}");
    let took = t.elapsed();
    let after_put = peak_rss_kib(pid);
    assert_eq!(
        std::fs::metadata(dir.join("ledger/blobs").join(&hash)).unwrap().len(),
        SIZE
    );
    assert_eq!(staged_uploads(dir), 0);
    // Read back, streamed both ways, and checked against the name.
    let mut r = signed(reqwest::Method::GET, &url, &hash, &user).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    assert_eq!((total, hasher.finalize().to_hex().to_string()), (SIZE, hash));
    let after_get = peak_rss_kib(pid);
    eprintln!(
        "ledger peak RSS (VmHWM): {before} KiB at start, {after_put} KiB after a 1 GiB upload ({:.1} s), {after_get} KiB after reading it back",
        took.as_secs_f64()
    );
    assert!(after_put < 100 * 1024, "peak RSS {after_put} KiB after the upload");
    assert!(after_get < 100 * 1024, "peak RSS {after_get} KiB after the download");
}

// ---- A small real network: a ledger, one node, a deployed model. ----

fn key(dir: &Path, name: &str) -> Keypair {
    keys::read(&dir.join(name)).unwrap()
}

/// Starts a node (key `NAME.json`) and waits until it reports that it is registered.
fn start_node(dir: &Path, url: &str, name: &str) -> Proc {
    common::start_node_env(dir, url, name, &[], &[])
}

/// Deploys the generated 8-layer model as model 1 with `user.json` and
/// writes `ids.npy`; returns the unsplit run's output for it.
fn deploy_and_reference(dir: &Path, url: &str) -> Tensor {
    ok(bin()
        .args(["generate", "--layers", "8", "-o", "model.onnx"])
        .current_dir(dir)
        .output()
        .unwrap());
    fund_key(dir, url, "user.json", 100);
    let out = ok(bin()
        .args([
            "deploy",
            "model.onnx",
            "--ledger",
            url,
            "--key",
            "user.json",
            "--vram",
            "700KiB",
            "--dim",
            "batch=1",
            "--dim",
            "seq=8",
        ])
        .current_dir(dir)
        .output()
        .unwrap());
    assert!(out.contains("model 1 registered"), "{out}");
    let ids = Tensor::from_i64(vec![1, 8], &[2, 7, 1, 8, 2, 8, 1, 8]).unwrap();
    std::fs::write(dir.join("ids.npy"), npy::encode(&ids).unwrap()).unwrap();
    ok(bin()
        .args(["run", "model.onnx", "-i", "input_ids=ids.npy", "-o", "whole"])
        .current_dir(dir)
        .output()
        .unwrap());
    npy::decode(&std::fs::read(dir.join("whole/logits.npy")).unwrap()).unwrap()
}

/// `splitup submit 1 --key KEY -i input_ids=IDS` with `extra`; returns the execution id.
fn submit(dir: &Path, url: &str, key: &str, ids: &str, extra: &[&str]) -> u64 {
    let out = ok(bin()
        .args(["submit", "1", "--ledger", url, "--key", key, "-i"])
        .arg(format!("input_ids={ids}"))
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap());
    out.lines()
        .find_map(|l| l.strip_prefix("execution "))
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no execution id in {out:?}"))
}

fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed().as_secs() < secs, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// An execution's blobs: its input, then every task's output, by hash.
fn execution_blobs(url: &str, id: u64) -> Vec<String> {
    let e = get_json(url, &format!("/v1/executions/{id}"));
    let mut out = vec![e["input"].as_str().unwrap().to_string()];
    for t in e["tasks"].as_array().unwrap() {
        out.push(splitup_store::hash_of_uri(t["output_uris"][0].as_str().unwrap()).to_string());
    }
    out
}

fn completed(url: &str, id: u64) -> bool {
    get_json(url, &format!("/v1/executions/{id}"))["status"] == "Completed"
}

#[test]
fn one_users_acknowledgement_never_deletes_a_blob_another_execution_still_refers_to() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir, &[]);
    let reference = deploy_and_reference(dir, &url);
    let _node = start_node(dir, &url, "node");
    fund_key(dir, &url, "b.json", 100);
    // B submits first and does not fetch yet; A submits the same input and
    // acknowledges its outputs as soon as they are on its disk.
    let b = submit(dir, &url, "b.json", "ids.npy", &[]);
    let a = submit(
        dir,
        &url,
        "user.json",
        "ids.npy",
        &["--wait", "-o", "net-a", "--timeout", "120"],
    );
    assert!(get_json(&url, &format!("/v1/executions/{a}"))["fetched"] == true);
    let (ea, eb) = (execution_blobs(&url, a), execution_blobs(&url, b));
    assert_eq!(ea[0], eb[0], "the same input is one blob");
    let shared = ea.iter().filter(|h| eb.contains(h)).count();
    eprintln!("executions {a} and {b} share {shared} of {} blobs", ea.len());
    // Proof that the collector has dealt with A's acknowledgement: a later
    // execution of A's, acknowledged after it, has had its own input deleted.
    let ids = Tensor::from_i64(vec![1, 8], &[3, 1, 4, 1, 5, 9, 2, 6]).unwrap();
    std::fs::write(dir.join("other.npy"), npy::encode(&ids).unwrap()).unwrap();
    let later = submit(
        dir,
        &url,
        "user.json",
        "other.npy",
        &["--wait", "-o", "net-later", "--timeout", "120"],
    );
    let later_input = execution_blobs(&url, later)[0].clone();
    assert!(!eb.contains(&later_input));
    wait_for(90, "the later execution's input to be collected", || {
        !on_disk(dir, &later_input)
    });
    // B's execution is untouched: its input and every output are still there.
    wait_for(120, "B's execution to complete", || completed(&url, b));
    let eb = execution_blobs(&url, b);
    for h in &eb {
        assert!(on_disk(dir, h), "blob {h} of B's execution was deleted");
    }
    let kb = key(dir, "b.json");
    assert_eq!(read_status(&url, &eb[0], &kb), 200, "B reads its input");
    let out = ok(bin()
        .args([
            "fetch",
            &b.to_string(),
            "--ledger",
            &url,
            "--key",
            "b.json",
            "-o",
            "net-b",
        ])
        .current_dir(dir)
        .output()
        .unwrap());
    assert!(out.contains("acknowledged"), "{out}");
    let net = npy::decode(&std::fs::read(dir.join("net-b/logits.npy")).unwrap()).unwrap();
    allclose(&net, &reference, Tolerance::PARTITION).unwrap();
}

#[test]
fn a_stranger_cannot_read_an_executions_tensors_its_user_and_nodes_can() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir, &[]);
    let reference = deploy_and_reference(dir, &url);
    let _node = start_node(dir, &url, "node");
    let id = submit(
        dir,
        &url,
        "user.json",
        "ids.npy",
        &["--wait", "--keep", "-o", "net", "--timeout", "120"],
    );
    let net = npy::decode(&std::fs::read(dir.join("net/logits.npy")).unwrap()).unwrap();
    allclose(&net, &reference, Tolerance::PARTITION).unwrap();
    // A stranger with money, one with little, the user, the node.
    fund_key(dir, &url, "stranger.json", 5000);
    fund_key(dir, &url, "pauper.json", 1);
    let (stranger, pauper) = (key(dir, "stranger.json"), key(dir, "pauper.json"));
    let (user, node) = (key(dir, "user.json"), key(dir, "node.json"));
    let tensors = execution_blobs(&url, id);
    for h in &tensors {
        assert_eq!(read_status(&url, h, &stranger), 403, "a stranger read {h}");
        assert_eq!(read_status(&url, h, &pauper), 403, "a stranger read {h}");
        assert_eq!(read_status(&url, h, &user), 200, "the user cannot read {h}");
        assert_eq!(read_status(&url, h, &node), 200, "the node cannot read {h}");
        let r = http().get(format!("{url}/v1/blobs/{h}")).send().unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    // `fetch` without a key is refused before it reads anything; the stranger's key is refused by the ledger.
    let o = bin()
        .args(["fetch", &id.to_string(), "--ledger", &url, "-o", "x"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--key"));
    let o = bin()
        .args([
            "fetch",
            &id.to_string(),
            "--ledger",
            &url,
            "--key",
            "stranger.json",
            "-o",
            "x",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A model's weights: its owner, nodes, and whoever could stake as a node; not a pauper.
    let model = get_json(&url, "/v1/models/1");
    let weights: Vec<String> = model["def"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["weight_hash"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| format!("{:02x}", b.as_u64().unwrap()))
                .collect()
        })
        .collect();
    for w in &weights {
        assert_eq!(read_status(&url, w, &user), 200);
        assert_eq!(read_status(&url, w, &node), 200);
        assert_eq!(read_status(&url, w, &stranger), 200);
        assert_eq!(read_status(&url, w, &pauper), 403);
    }
}
