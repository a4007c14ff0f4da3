//! A network people can operate (issue 11), against real processes: a
//! ledger on 127.0.0.1 and `splitup` invocations. Defaults (flag > env >
//! config file > default), funding and staking, `models`, `undeploy`,
//! `unstake`, `withdraw`, honest messages, `status`'s columns, `--json`
//! against docs/cli-json.md, and help text for every argument.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{bin, start_ledger, start_ledger_env, Proc};

/// `splitup ARGS` in `dir`, with the splitup directory `home` and none of
/// the caller's SPLITUP_* variables (a developer's config must not leak in).
fn cmd(dir: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.args(args)
        .current_dir(dir)
        .env("SPLITUP_HOME", home)
        .env_remove("SPLITUP_LEDGER")
        .env_remove("SPLITUP_KEY")
        .env_remove("SPLITUP_STORE");
    c
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// The standard error of a command that must fail with `code`.
fn fails(o: Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(&o));
    String::from_utf8(o.stderr).unwrap()
}

/// The one JSON document a `--json` command wrote: stdout is exactly one
/// line, and it parses.
fn json_doc(o: Output) -> Value {
    let out = ok(o);
    assert_eq!(out.lines().count(), 1, "not one line of JSON on stdout:\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// The rows of docs/cli-json.md's table for `command`: (field path, type).
fn documented(command: &str) -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli-json.md")).unwrap();
    // Headings: "## `balance`", "## `status EXECUTION`", "## `status` (no execution)".
    let head = format!("`{command}`");
    let section = doc
        .split("\n## ")
        .find(|s| {
            let first = s.lines().next().unwrap_or_default();
            first == head || first.starts_with(&format!("{head} "))
        })
        .unwrap_or_else(|| panic!("docs/cli-json.md has no section ## {head}"));
    let rows: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let field = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((field.to_string(), cells.get(2)?.to_string()))
        })
        .collect();
    assert!(!rows.is_empty(), "no fields documented for {command}");
    rows
}

/// Every value at `path` (`a.b`, `a[].b`); a null or absent parent on the
/// way (an optional object) ends the walk there.
fn values_at<'a>(v: &'a Value, path: &str, whole: &Value) -> Vec<&'a Value> {
    let mut here = vec![v];
    let segs: Vec<&str> = path.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        let (name, each) = match seg.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (*seg, false),
        };
        let mut next = Vec::new();
        for h in here {
            if h.is_null() && i > 0 {
                continue;
            }
            let f = h
                .get(name)
                .unwrap_or_else(|| panic!("field {path} is missing (at {name}) in {whole}"));
            if each {
                next.extend(
                    f.as_array()
                        .unwrap_or_else(|| panic!("{path}: {name} is not an array in {whole}")),
                );
            } else {
                next.push(f);
            }
        }
        here = next;
    }
    here
}

/// Asserts that `v` has every field docs/cli-json.md documents for
/// `command`, each of the documented type.
fn check_doc(command: &str, v: &Value) {
    for (path, ty) in documented(command) {
        for x in values_at(v, &path, v) {
            let fits = ty.split(" or ").any(|t| match t {
                "string" => x.is_string(),
                "integer" => x.is_u64() || x.is_i64(),
                "boolean" => x.is_boolean(),
                "array" => x.is_array(),
                "object" => x.is_object(),
                "null" => x.is_null(),
                other => panic!("docs/cli-json.md: unknown type {other:?} for {command} {path}"),
            });
            assert!(fits, "{command}: {path} should be {ty}, is {x} in {v}");
        }
    }
}

/// A new key `dir/NAME.json`; returns its public key.
fn new_key(dir: &Path, home: &Path, name: &str) -> String {
    let v = json_doc(
        cmd(dir, home, &["keys", "new", "-o", &format!("{name}.json"), "--json"])
            .output()
            .unwrap(),
    );
    check_doc("keys new", &v);
    v["public_key"].as_str().unwrap().to_string()
}

fn faucet(dir: &Path, home: &Path, url: &str, key: &str, usdc: Option<u64>) -> Value {
    let mut c = cmd(dir, home, &["faucet", "--ledger", url, "--key", key, "--json"]);
    if let Some(u) = usdc {
        c.args(["--amount", &u.to_string()]);
    }
    let v = json_doc(c.output().unwrap());
    check_doc("faucet", &v);
    v
}

fn balance(dir: &Path, home: &Path, url: &str, key: &str) -> Value {
    let v = json_doc(
        cmd(dir, home, &["balance", "--ledger", url, "--key", key, "--json"])
            .output()
            .unwrap(),
    );
    check_doc("balance", &v);
    v
}

/// `node start` on key `KEY` with `args`, read until it registers (its
/// output as JSON lines, each checked against the docs); `None` and its
/// stderr if it exits first.
fn node(dir: &Path, home: &Path, url: &str, key: &str, args: &[&str]) -> Result<(Proc, Vec<String>), String> {
    let mut child = cmd(dir, home, &["node", "start", "--ledger", url, "--key", key, "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            let status = child.wait().unwrap();
            return Err(format!("{status}: {err}"));
        }
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("node start --json wrote {line:?}: {e}"));
        check_doc("node start", &v);
        let m = v["message"].as_str().unwrap().to_string();
        lines.push(m.clone());
        if m.contains("registered with") {
            break;
        }
    }
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in out.lines().chain(BufReader::new(err).lines()).map_while(Result::ok) {
            eprintln!("[node] {l}");
        }
    });
    Ok((Proc(child), lines))
}

/// The error of a `node start` that must exit before registering.
fn refused(r: Result<(Proc, Vec<String>), String>) -> String {
    match r {
        Ok((_, lines)) => panic!("the node registered: {lines:?}"),
        Err(e) => e,
    }
}

/// Generates the 8-layer transformer and deploys it with key `user.json`
/// (funded with 100 USDC); returns the model's task count.
fn deploy(dir: &Path, home: &Path, url: &str) -> u64 {
    ok(cmd(dir, home, &["generate", "--layers", "8", "-o", "model.onnx"])
        .output()
        .unwrap());
    new_key(dir, home, "user");
    faucet(dir, home, url, "user.json", Some(100));
    let v = json_doc(
        cmd(
            dir,
            home,
            &[
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
                "--json",
            ],
        )
        .output()
        .unwrap(),
    );
    check_doc("deploy", &v);
    assert_eq!(v["model"], 1, "{v}");
    assert_eq!(v["name"], "model", "{v}");
    let tasks = v["tasks"].as_u64().unwrap();
    assert!(tasks >= 4, "{v}");
    let ids = splitup_tensor::Tensor::from_i64(vec![1, 8], &[2, 7, 1, 8, 2, 8, 1, 8]).unwrap();
    std::fs::write(dir.join("ids.npy"), splitup_tensor::npy::encode(&ids).unwrap()).unwrap();
    tasks
}

fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed().as_secs() < secs, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn help_documents_every_argument() {
    /// The entries of a help section (`Commands:`, `Options:`, `Arguments:`):
    /// (the entry's first line, its help text without `[default: …]`-style notes).
    fn entries(help: &str, section: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut inside = false;
        for line in help.lines() {
            if !line.starts_with(' ') && !line.is_empty() {
                inside = line.trim_end() == section;
                continue;
            }
            if !inside || line.trim().is_empty() {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            if indent <= 6 {
                // A new entry: its name, then (after 2+ spaces) maybe its help.
                let t = line.trim_start();
                let (spec, rest) = match t.find("  ") {
                    Some(i) => (&t[..i], t[i..].trim()),
                    None => (t, ""),
                };
                out.push((spec.to_string(), rest.to_string()));
            } else if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        }
        for e in &mut out {
            // Drop clap's notes: [default: …], [env: …], [possible values: …], [aliases: …].
            let mut s = e.1.clone();
            for note in ["[default:", "[env:", "[possible values:", "[aliases:"] {
                while let Some(i) = s.find(note) {
                    let j = s[i..].find(']').map_or(s.len(), |j| i + j + 1);
                    s.replace_range(i..j, "");
                }
            }
            e.1 = s.trim().to_string();
        }
        out
    }
    let d = tempfile::tempdir().unwrap();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut missing = Vec::new();
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let mut args = vec!["help".to_string()];
        args.extend(path.iter().cloned());
        let help = ok(
            cmd(d.path(), d.path(), &args.iter().map(String::as_str).collect::<Vec<_>>())
                .output()
                .unwrap(),
        );
        seen += 1;
        for (name, about) in entries(&help, "Commands:") {
            if name == "help" {
                continue;
            }
            if about.is_empty() {
                missing.push(format!("splitup {} {name}: no description", path.join(" ")));
            }
            let mut p = path.clone();
            p.push(name);
            todo.push(p);
        }
        for section in ["Arguments:", "Options:"] {
            for (spec, help) in entries(&help, section) {
                if help.is_empty() {
                    missing.push(format!("splitup {} {spec}", path.join(" ")));
                }
            }
        }
        // The sim's --p cites no file that is not in the repository.
        if path == ["sim"] {
            assert!(!help.contains("DESIGN.md"), "{help}");
        }
    }
    assert!(seen > 20, "walked only {seen} help pages");
    assert!(
        missing.is_empty(),
        "arguments without help text:\n{}",
        missing.join("\n")
    );
    // The precedence of the defaults is in --help.
    let top = ok(cmd(d.path(), d.path(), &["--help"]).output().unwrap());
    for s in [
        "SPLITUP_LEDGER",
        "SPLITUP_KEY",
        "config.toml",
        "first found wins",
        "docs/cli-json.md",
    ] {
        assert!(top.contains(s), "splitup --help does not mention {s}:\n{top}");
    }
}

#[test]
fn ledger_and_key_come_from_the_flag_then_the_environment_then_the_config_file_then_the_default() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let home = dir.join("home");
    let (_ledger, url) = start_ledger(dir, &[]);
    let port = url.rsplit(':').next().unwrap().to_string();

    // `keys new` without a path writes the default key and says where.
    let o = cmd(dir, &home, &["keys", "new"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let default_key = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert_eq!(default_key.len(), 64, "stdout is the public key");
    let stderr = String::from_utf8(o.stderr).unwrap();
    let path = home.join("key.json");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&home).unwrap().permissions().mode() & 0o777, 0o700);
    let e = fails(cmd(dir, &home, &["keys", "new"]).output().unwrap(), 1);
    assert!(e.contains("refusing to overwrite"), "{e}");
    let v = json_doc(cmd(dir, &home, &["keys", "show", "--json"]).output().unwrap());
    check_doc("keys show", &v);
    assert_eq!(v["public_key"], default_key.as_str());

    // HOST:PORT is completed to http://HOST:PORT (127.0.0.1 and localhost).
    for ledger in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let v = json_doc(
            cmd(dir, &home, &["faucet", "--ledger", &ledger, "--amount", "1", "--json"])
                .output()
                .unwrap(),
        );
        assert_eq!(v["public_key"], default_key.as_str(), "the default key signs");
    }
    // Garbage is a usage error that says what a ledger URL looks like, from
    // the flag and from the environment; from the config file, an error
    // naming the file.
    for bad in [
        "lol",
        "ftp://127.0.0.1:1",
        "127.0.0.1",
        "http://:7878",
        "localhost:port",
    ] {
        let e = fails(cmd(dir, &home, &["nodes", "--ledger", bad]).output().unwrap(), 2);
        assert!(e.contains("not a ledger URL"), "{bad}: {e}");
        let e = fails(
            cmd(dir, &home, &["nodes"]).env("SPLITUP_LEDGER", bad).output().unwrap(),
            2,
        );
        assert!(e.contains("not a ledger URL"), "{bad}: {e}");
    }
    std::fs::write(home.join("config.toml"), "ledger = \"lol\"\n").unwrap();
    let e = fails(cmd(dir, &home, &["nodes"]).output().unwrap(), 1);
    assert!(e.contains("config.toml") && e.contains("not a ledger URL"), "{e}");

    // Keys: flag > SPLITUP_KEY > config (relative to the splitup directory) > default.
    let flag_key = new_key(dir, &home, "flag");
    let env_key = new_key(dir, &home, "env");
    let cfg_key = new_key(&home, &home, "cfg");
    std::fs::write(
        home.join("config.toml"),
        format!("ledger = \"{url}\"\nkey = \"cfg.json\"\n"),
    )
    .unwrap();
    let show = |extra: &[&str], env: Option<&str>| {
        let mut c = cmd(dir, &home, &["keys", "show", "--json"]);
        c.args(extra);
        if let Some(e) = env {
            c.env("SPLITUP_KEY", e);
        }
        json_doc(c.output().unwrap())["public_key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(show(&[], None), cfg_key, "config > default");
    assert_eq!(show(&[], Some("env.json")), env_key, "env > config");
    assert_eq!(show(&["--key", "flag.json"], Some("env.json")), flag_key, "flag > env");
    std::fs::write(
        home.join("config.toml"),
        format!("ledger = \"{url}\"\nkey = \"missing.json\"\n"),
    )
    .unwrap();
    let e = fails(cmd(dir, &home, &["balance"]).output().unwrap(), 1);
    assert!(e.contains("missing.json") && e.contains("config.toml"), "{e}");
    std::fs::write(home.join("config.toml"), "leger = \"x\"\n").unwrap();
    let e = fails(cmd(dir, &home, &["balance"]).output().unwrap(), 1);
    assert!(e.contains("leger"), "a misspelt setting is named: {e}");

    // Ledgers: config > default; env > config; flag > env.
    let dead = "http://127.0.0.1:9".to_string();
    std::fs::write(home.join("config.toml"), format!("ledger = \"{url}\"\n")).unwrap();
    let who = |extra: &[&str], env: Option<&str>| {
        let mut c = cmd(dir, &home, &["balance", "--json"]);
        c.args(extra);
        if let Some(e) = env {
            c.env("SPLITUP_LEDGER", e);
        }
        c.output().unwrap()
    };
    let v = json_doc(who(&[], None));
    assert_eq!(v["public_key"], default_key.as_str());
    assert_eq!(v["balance_micro_usdc"], 2_000_000, "two faucet grants of 1 USDC");
    let e = fails(who(&[], Some(&dead)), 1);
    assert!(
        e.contains("127.0.0.1:9"),
        "SPLITUP_LEDGER wins over the config file: {e}"
    );
    json_doc(who(&["--ledger", &url], Some(&dead)));
    // Without a config file the default ledger is http://127.0.0.1:7878.
    std::fs::remove_file(home.join("config.toml")).unwrap();
    let o = who(&[], None);
    if !o.status.success() {
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("http://127.0.0.1:7878"),
            "{}",
            text(&o)
        );
    }
    // A missing default key says how to make one.
    let other = dir.join("empty-home");
    let e = fails(cmd(dir, &other, &["balance", "--ledger", &url]).output().unwrap(), 1);
    assert!(e.contains("splitup keys new"), "{e}");
}

#[test]
fn the_faucet_funds_the_readme_node_and_a_node_that_cannot_stake_or_run_anything_registers_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let home = dir.join("home");
    let (_ledger, url) = start_ledger(dir, &[]);
    let listed = |key: &str| {
        let v = json_doc(
            cmd(dir, &home, &["nodes", "--ledger", &url, "--json"])
                .output()
                .unwrap(),
        );
        check_doc("nodes", &v);
        v["nodes"].as_array().unwrap().iter().any(|n| n["public_key"] == key)
    };

    // The README's node: `faucet` with its default, then `node start --vram 8GiB`.
    let a = new_key(dir, &home, "a");
    let v = faucet(dir, &home, &url, "a.json", None);
    let stake_8gib: u64 = 1_900_000_000;
    assert!(
        v["minted_micro_usdc"].as_u64().unwrap() >= stake_8gib + 1_000_000_000,
        "{v}"
    );
    let (_a, lines) = node(dir, &home, &url, "a.json", &["--vram", "8GiB"]).unwrap();
    assert!(
        lines.iter().any(|l| l.contains("no active model on this ledger yet")),
        "a node before any deploy says it supports nothing yet: {lines:?}"
    );
    let b = balance(dir, &home, &url, "a.json");
    assert_eq!(b["node"]["stake_micro_usdc"], stake_8gib, "{b}");
    assert_eq!(b["node"]["status"], "Active", "{b}");
    assert!(listed(&a));

    // Too poor to stake: refused before registering, and says so.
    let poor = new_key(dir, &home, "poor");
    faucet(dir, &home, &url, "poor.json", Some(100));
    let e = refused(node(dir, &home, &url, "poor.json", &["--vram", "8GiB"]));
    assert!(
        e.contains("1900 USDC") && e.contains("nothing was registered") && e.contains("faucet"),
        "{e}"
    );
    assert!(!listed(&poor), "a node that cannot stake was registered");
    // An explicit --stake above the balance: the same.
    let rich = new_key(dir, &home, "rich");
    faucet(dir, &home, &url, "rich.json", None);
    let e = refused(node(
        dir,
        &home,
        &url,
        "rich.json",
        &["--vram", "8GiB", "--stake", "6000"],
    ));
    assert!(e.contains("6000 USDC") && e.contains("nothing was registered"), "{e}");
    assert!(!listed(&rich));

    // Once a model is deployed, a node whose VRAM runs none of its tasks
    // refuses to stake unless told to.
    deploy(dir, &home, &url);
    let e = refused(node(dir, &home, &url, "rich.json", &["--vram", "64KiB"]));
    assert!(
        e.contains("runs no task of the 1 active model")
            && e.contains("--stake-idle")
            && e.contains("Nothing was registered"),
        "{e}"
    );
    assert!(!listed(&rich));
    let (_idle, lines) = node(dir, &home, &url, "rich.json", &["--vram", "64KiB", "--stake-idle"]).unwrap();
    assert!(lines.last().unwrap().contains("supporting 0 tasks"), "{lines:?}");
    let b = balance(dir, &home, &url, "rich.json");
    assert_eq!(b["node"]["stake_micro_usdc"], 1_100_000_000, "1000 + 100 × 1 GB: {b}");
    // A node that fits supports the model's tasks.
    new_key(dir, &home, "c");
    faucet(dir, &home, &url, "c.json", None);
    let (_c, lines) = node(dir, &home, &url, "c.json", &["--vram", "8GiB"]).unwrap();
    assert!(!lines.last().unwrap().contains("supporting 0 tasks"), "{lines:?}");
}

#[test]
fn models_undeploy_unstake_and_withdraw_say_what_happens_next() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let home = dir.join("home");
    let (ledger, url) = start_ledger_env(dir, "127.0.0.1:0", &["--test-timeouts"], &[]);
    let tasks = deploy(dir, &home, &url);
    let user = balance(dir, &home, &url, "user.json")["public_key"]
        .as_str()
        .unwrap()
        .to_string();

    let out = ok(cmd(dir, &home, &["models", "--ledger", &url]).output().unwrap());
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(out.lines().next().unwrap().starts_with("model  name"), "{out}");
    assert!(
        row.contains(" model ")
            && row.contains(&format!(" {tasks} "))
            && row.contains(" yes ")
            && row.contains(&user[..16]),
        "{out}"
    );
    assert!(out.contains("1 model, 1 active"), "{out}");
    let v = json_doc(
        cmd(dir, &home, &["models", "--ledger", &url, "--json"])
            .output()
            .unwrap(),
    );
    check_doc("models", &v);
    assert_eq!(v["models"][0]["tasks"], tasks);
    assert_eq!(v["models"][0]["owner"], user.as_str());

    // Two nodes; the first unstakes part of its stake, the second all of it.
    new_key(dir, &home, "n1");
    faucet(dir, &home, &url, "n1.json", None);
    let (_n1, _) = node(dir, &home, &url, "n1.json", &["--vram", "8GiB"]).unwrap();
    new_key(dir, &home, "n2");
    faucet(dir, &home, &url, "n2.json", None);
    let (_n2, _) = node(dir, &home, &url, "n2.json", &["--vram", "8GiB"]).unwrap();

    let out = ok(cmd(
        dir,
        &home,
        &["unstake", "--ledger", &url, "--key", "n1.json", "--amount", "0.5"],
    )
    .output()
    .unwrap());
    assert!(
        out.contains("unstaking 0.5 USDC of node")
            && out.contains("1900 USDC stake")
            && out.contains("splitup withdraw"),
        "{out}"
    );
    assert!(
        out.contains("withdrawable in 1 min") && out.contains("UTC"),
        "the 10 s test lockup: {out}"
    );
    assert!(
        out.contains("assigned no new work") && out.contains("cannot be cancelled"),
        "{out}"
    );
    let e = fails(
        cmd(dir, &home, &["unstake", "--ledger", &url, "--key", "n1.json"])
            .output()
            .unwrap(),
        1,
    );
    assert!(e.contains("already unstaking"), "{e}");
    let e = fails(
        cmd(dir, &home, &["withdraw", "--ledger", &url, "--key", "n1.json"])
            .output()
            .unwrap(),
        1,
    );
    assert!(e.contains("still locked") && e.contains("withdrawable in"), "{e}");
    let b = ok(cmd(dir, &home, &["balance", "--ledger", &url, "--key", "n1.json"])
        .output()
        .unwrap());
    assert!(b.contains("unstaking 0.5 USDC: withdrawable in"), "{b}");

    let v = json_doc(
        cmd(dir, &home, &["unstake", "--ledger", &url, "--key", "n2.json", "--json"])
            .output()
            .unwrap(),
    );
    check_doc("unstake", &v);
    assert_eq!(v["unstaking_micro_usdc"], 1_900_000_000, "{v}");
    assert_eq!(v["free_stake_micro_usdc"], 0, "{v}");
    assert_eq!(v["lockup_ms"], 10_000, "{v}");
    let b = balance(dir, &home, &url, "n2.json");
    assert_eq!(b["node"]["unstaking"]["amount_micro_usdc"], 1_900_000_000, "{b}");
    assert_eq!(
        b["node"]["unstaking"]["withdrawable_at_ms"], v["withdrawable_at_ms"],
        "{b}"
    );
    let before = b["balance_micro_usdc"].as_u64().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(11));
    let v = json_doc(
        cmd(
            dir,
            &home,
            &["withdraw", "--ledger", &url, "--key", "n2.json", "--json"],
        )
        .output()
        .unwrap(),
    );
    check_doc("withdraw", &v);
    assert_eq!(v["withdrawn_micro_usdc"], 1_900_000_000, "{v}");
    assert_eq!(v["stake_micro_usdc"], 0, "{v}");
    assert_eq!(v["balance_micro_usdc"], before + 1_900_000_000, "{v}");
    let out = ok(cmd(dir, &home, &["withdraw", "--ledger", &url, "--key", "n1.json"])
        .output()
        .unwrap());
    assert!(
        out.contains("withdrew 0.5 USDC") && out.contains("stake left 1899.5 USDC"),
        "{out}"
    );

    // Undeploy: only the owner; new executions are refused afterwards.
    let e = fails(
        cmd(dir, &home, &["undeploy", "1", "--ledger", &url, "--key", "n1.json"])
            .output()
            .unwrap(),
        1,
    );
    assert!(e.contains("only its owner"), "{e}");
    let out = ok(
        cmd(dir, &home, &["undeploy", "1", "--ledger", &url, "--key", "user.json"])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("model 1 (\"model\") deactivated")
            && out.contains("new executions of it are refused")
            && out.contains("0 executions in progress"),
        "{out}"
    );
    let e = fails(
        cmd(
            dir,
            &home,
            &[
                "submit",
                "1",
                "--ledger",
                &url,
                "--key",
                "user.json",
                "-i",
                "input_ids=ids.npy",
            ],
        )
        .output()
        .unwrap(),
        1,
    );
    assert!(e.contains("deactivated"), "{e}");
    let v = json_doc(
        cmd(
            dir,
            &home,
            &["undeploy", "1", "--ledger", &url, "--key", "user.json", "--json"],
        )
        .output()
        .unwrap(),
    );
    check_doc("undeploy", &v);
    assert_eq!(
        (v["active"].clone(), v["was_active"].clone()),
        (false.into(), false.into()),
        "{v}"
    );
    let v = json_doc(
        cmd(dir, &home, &["models", "--ledger", &url, "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(v["models"][0]["active"], false);
    let out = ok(cmd(dir, &home, &["models", "--ledger", &url]).output().unwrap());
    assert!(out.contains("1 model, 0 active"), "{out}");

    // Minting with the development network's mint key, in JSON.
    let mint_key = dir.join("ledger-operator-keys/mint-authority.json");
    let to = new_key(dir, &home, "to");
    let v = json_doc(
        cmd(
            dir,
            &home,
            &["mint", "--ledger", &url, "--to", &to, "--amount", "3", "--json"],
        )
        .arg("--key")
        .arg(&mint_key)
        .output()
        .unwrap(),
    );
    check_doc("mint", &v);
    assert_eq!(v["minted_micro_usdc"], 3_000_000);
    drop(ledger);
}

#[test]
fn status_shows_who_ran_and_checked_each_task_and_fetch_after_acknowledgement_says_so() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let home = dir.join("home");
    // p = 1: every result is challenged, and the other node validates it.
    let (_ledger, url) = start_ledger_env(dir, "127.0.0.1:0", &["--p", "1", "--test-timeouts"], &[]);
    let tasks = deploy(dir, &home, &url);
    let mut keys = Vec::new();
    let mut nodes = Vec::new();
    for n in ["n1", "n2"] {
        keys.push(new_key(dir, &home, n));
        faucet(dir, &home, &url, &format!("{n}.json"), None);
        nodes.push(
            node(dir, &home, &url, &format!("{n}.json"), &["--vram", "8GiB"])
                .unwrap()
                .0,
        );
    }
    let submit = |extra: &[&str]| {
        let v = json_doc(
            cmd(
                dir,
                &home,
                &[
                    "submit",
                    "1",
                    "--ledger",
                    &url,
                    "--key",
                    "user.json",
                    "-i",
                    "input_ids=ids.npy",
                    "--wait",
                    "--timeout",
                    "120",
                    "--json",
                ],
            )
            .args(extra)
            .output()
            .unwrap(),
        );
        check_doc("submit", &v);
        v
    };
    let v = submit(&["-o", "kept", "--keep"]);
    assert_eq!(
        (v["execution"].clone(), v["status"].clone()),
        (1.into(), "Completed".into()),
        "{v}"
    );
    assert_eq!(v["acknowledged"], false, "{v}");
    assert_eq!(v["outputs"][0]["name"], "logits", "{v}");
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([1, 8, 2048]), "{v}");

    // The table: aligned columns, the node's and the validator's short
    // keys, a verdict on every row, states without quotes.
    let out = ok(cmd(dir, &home, &["status", "1", "--ledger", &url]).output().unwrap());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "execution 1 of model 1: Completed", "{out}");
    assert!(!out.contains('"'), "{out}");
    let head = lines[1];
    for col in ["task", "state", "node", "attempts", "timeouts", "challenge", "verdict"] {
        assert!(head.contains(col), "{out}");
    }
    let at = |col: &str| head.find(col).unwrap();
    assert_eq!(lines.len(), 2 + tasks as usize, "{out}");
    for row in &lines[2..] {
        assert_eq!(&row[at("state")..at("state") + 9], "Completed", "{out}");
        assert!(row[at("verdict")..].starts_with("validated"), "{out}");
        let node = row[at("node")..].split_whitespace().next().unwrap();
        let checker = row[at("challenge")..].split_whitespace().next().unwrap();
        assert!(keys.iter().any(|k| k.starts_with(node)) && node.len() == 16, "{out}");
        assert!(keys.iter().any(|k| k.starts_with(checker)) && checker != node, "{out}");
    }
    let v = json_doc(
        cmd(dir, &home, &["status", "1", "--ledger", &url, "--json"])
            .output()
            .unwrap(),
    );
    check_doc("status EXECUTION", &v);
    assert!(
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["verdict"] == "validated"),
        "{v}"
    );
    assert_eq!(v["status"], "Completed");
    let v = json_doc(
        cmd(dir, &home, &["status", "--ledger", &url, "--json"])
            .output()
            .unwrap(),
    );
    check_doc("status", &v);
    assert_eq!(v["recent"][0]["execution"], 1, "{v}");
    let out = ok(cmd(dir, &home, &["status", "--ledger", &url]).output().unwrap());
    assert!(out.contains("2 nodes, 1 model, 1 execution;"), "{out}");

    // fetch acknowledges; once the tensors are gone, a fetch says why.
    let v = json_doc(
        cmd(
            dir,
            &home,
            &[
                "fetch",
                "1",
                "--ledger",
                &url,
                "--key",
                "user.json",
                "-o",
                "fetched",
                "--json",
            ],
        )
        .output()
        .unwrap(),
    );
    check_doc("fetch", &v);
    assert_eq!(v["acknowledged"], true, "{v}");
    assert_eq!(
        std::fs::read(dir.join("fetched/logits.npy")).unwrap(),
        std::fs::read(dir.join("kept/logits.npy")).unwrap()
    );
    // `submit --wait` acknowledges too.
    let v = submit(&["-o", "second"]);
    assert_eq!(
        (v["execution"].clone(), v["acknowledged"].clone()),
        (2.into(), true.into()),
        "{v}"
    );
    let mut last = String::new();
    wait_for(60, "execution 2's tensors to be deleted", || {
        let o = cmd(
            dir,
            &home,
            &["fetch", "2", "--ledger", &url, "--key", "user.json", "-o", "again"],
        )
        .output()
        .unwrap();
        last = String::from_utf8_lossy(&o.stderr).into_owned();
        !o.status.success()
    });
    assert!(
        last.contains("outputs were deleted when they were acknowledged") && last.contains("submit --wait --keep"),
        "{last}"
    );
    assert!(!last.starts_with("error: no blob"), "{last}");
    drop(nodes);
}

/// `ledger start --json`: one JSON line per event, the first once it listens.
#[test]
fn ledger_start_json_announces_where_it_listens() {
    let d = tempfile::tempdir().unwrap();
    let mut child = cmd(
        d.path(),
        d.path(),
        &[
            "ledger",
            "start",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data",
            "data",
            "--json",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let _ledger = Proc(child);
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    check_doc("ledger start", &v);
    assert_eq!(v["event"], "listening");
    let url = v["url"].as_str().unwrap().to_string();
    let v = json_doc(
        cmd(d.path(), d.path(), &["status", "--ledger", &url, "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(v["ledger"], url.as_str());
}
