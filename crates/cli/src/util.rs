//! Parsing and formatting helpers for the command line.

use anyhow::{bail, Context, Result};
use splitup_tensor::Tensor;
use std::collections::BTreeMap;
use std::path::Path;

/// A public key: 64 lowercase hex digits.
pub fn parse_pubkey(s: &str) -> Result<splitup_protocol::Pubkey, String> {
    splitup_protocol::Pubkey::from_hex(s).ok_or_else(|| format!("{s:?} is not a public key (64 lowercase hex digits)"))
}

/// The default ledger URL.
pub const LEDGER_DEFAULT: &str = "http://127.0.0.1:7878";

/// A ledger's URL: `http(s)://HOST[:PORT][/PATH]`, or `HOST:PORT` (an IP
/// address, `localhost` or a DNS name with a port) completed to
/// `http://HOST:PORT`. Anything else is refused with what was expected, so
/// a typo is a usage error rather than a connection failure later.
pub fn parse_ledger_url(s: &str) -> Result<String, String> {
    let expected = || {
        format!(
            "{s:?} is not a ledger URL: expected http://HOST:PORT or https://HOST[:PORT] (e.g. {LEDGER_DEFAULT}), or HOST:PORT for http://HOST:PORT"
        )
    };
    let t = s.trim();
    let full = if t.contains("://") {
        t.to_string()
    } else {
        // Without a scheme only HOST:PORT is completed: a bare word is
        // more likely a mistake than a ledger on port 80.
        let (host, port) = t.rsplit_once(':').ok_or_else(expected)?;
        let host_ok = !host.is_empty()
            && (host.parse::<std::net::Ipv4Addr>().is_ok()
                || (host.starts_with('[') && host.ends_with(']'))
                || host
                    .split('.')
                    .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')));
        if !host_ok || port.parse::<u16>().is_err() {
            return Err(expected());
        }
        format!("http://{t}")
    };
    let url = reqwest::Url::parse(&full).map_err(|e| format!("{}: {e}", expected()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{s:?} is not a ledger URL: the scheme must be http or https, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(expected());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `1 task`, `2 tasks`: a count and a noun in the right number.
pub fn plural(n: impl Into<u128>, noun: &str) -> String {
    let n = n.into();
    let plural = if let Some(stem) = noun
        .strip_suffix('y')
        .filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']))
    {
        format!("{stem}ies")
    } else if noun.ends_with('s') || noun.ends_with("sh") || noun.ends_with("ch") {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    };
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {plural}")
    }
}

/// An amount of USDC with up to 6 decimals (`1900`, `0.5`) in micro-USDC.
pub fn parse_usdc(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not an amount of USDC (e.g. 1900 or 0.25, at most 6 decimals)");
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 6
        || !whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(splitup_protocol::USDC)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

/// Micro-USDC as USDC for people: `1900 USDC`, `0.25 USDC`.
pub fn usdc(micro: u64) -> String {
    let (w, f) = (micro / splitup_protocol::USDC, micro % splitup_protocol::USDC);
    if f == 0 {
        format!("{w} USDC")
    } else {
        format!("{w}.{} USDC", format!("{f:06}").trim_end_matches('0'))
    }
}

/// A short form of a public key for tables (its first 16 hex digits).
pub fn short(k: &splitup_protocol::Pubkey) -> String {
    k.hex()[..16].to_string()
}

/// Where `--json` sends its document: the process's original standard
/// output. In JSON mode, file descriptor 1 is pointed at standard error, so
/// every other line the command (or a library it calls) prints, and every
/// progress bar, goes to stderr, and stdout carries one JSON document only.
static JSON_OUT: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

/// Switches to JSON mode (see [`JSON_OUT`]); called once, before any output.
pub fn json_mode() -> Result<()> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    std::io::stdout().flush()?;
    // SAFETY: plain descriptor calls on descriptors this process owns; the
    // duplicate is owned by the File from here on.
    let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        bail!(
            "--json: cannot duplicate standard output: {}",
            std::io::Error::last_os_error()
        );
    }
    if unsafe { libc::dup2(2, 1) } < 0 {
        bail!(
            "--json: cannot redirect standard output: {}",
            std::io::Error::last_os_error()
        );
    }
    let _ = JSON_OUT.set(std::sync::Mutex::new(unsafe { std::fs::File::from_raw_fd(fd) }));
    Ok(())
}

/// Whether `--json` was given.
pub fn json() -> bool {
    JSON_OUT.get().is_some()
}

/// Writes one JSON document (one line) to the JSON output; a long-running
/// command (`ledger start`, `node start`) writes one per event (JSON Lines).
pub fn emit(v: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    let line = serde_json::to_string(v)?;
    match JSON_OUT.get() {
        Some(f) => {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            writeln!(f, "{line}")?;
            f.flush()?;
        }
        None => println!("{line}"),
    }
    Ok(())
}

/// Parses a size: `256MiB`, `12GiB`, `1.5GB`, `4096`, `8g` (bytes; binary
/// units KiB/MiB/GiB/TiB and the single letters k/m/g/t are powers of 1024;
/// KB/MB/GB/TB are powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 256MiB, 12GiB or a number of bytes)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ))
        }
    };
    let bytes = value * mult;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("size {s:?} must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// `NAME=V[,V...]`: the value of an input to freeze (converted to the
/// input's declared type once the model is loaded).
pub fn parse_value(s: &str) -> Result<(String, Vec<f64>), String> {
    let (name, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected INPUT=V[,V...], got {s:?}"))?;
    if name.is_empty() {
        return Err(format!("expected INPUT=V[,V...], got {s:?}"));
    }
    let vals = v
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|_| format!("{x:?} is not a number")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), vals))
}

pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// `name=value` pairs.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} must look like NAME=VALUE")),
    }
}

pub fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (k, v) = parse_pair(s)?;
    let v = v
        .parse()
        .map_err(|_| format!("--dim {k}: {v:?} is not a non-negative integer"))?;
    Ok((k, v))
}

pub fn parse_shape(s: &str) -> Result<(String, Vec<usize>), String> {
    let (k, v) = parse_pair(s)?;
    let dims = v
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .map_err(|_| format!("--shape {k}: {d:?} is not a non-negative integer"))
        })
        .collect::<Result<_, _>>()?;
    Ok((k, dims))
}

/// Largest `.npy` input accepted.
pub const NPY_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;

pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = splitup_exec::runner::read_bounded(path, NPY_BYTES_MAX)?;
    splitup_tensor::npy::decode(&bytes).with_context(|| format!("{} is not a valid .npy file", path.display()))
}

pub fn read_inputs(pairs: &[(String, String)]) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (name, file) in pairs {
        let t = read_npy(Path::new(file)).with_context(|| format!("input {name}"))?;
        if out.insert(name.clone(), t).is_some() {
            bail!("input {name} is given twice");
        }
    }
    Ok(out)
}

/// A file name for an output: characters outside [A-Za-z0-9._-] become `_`,
/// and collisions get a numeric suffix.
pub fn safe_names(names: &[String]) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    names
        .iter()
        .map(|n| {
            let mut base: String = n
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if base.is_empty() || base.starts_with('.') {
                base.insert(0, '_');
            }
            let mut name = format!("{base}.npy");
            let mut k = 1;
            while !used.insert(name.clone()) {
                name = format!("{base}_{k}.npy");
                k += 1;
            }
            name
        })
        .collect()
}

/// Writes outputs as `.npy`, one per output, and returns the paths written.
pub fn write_outputs(dir: &Path, outputs: &[(String, Tensor)]) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let names = safe_names(&outputs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    let mut paths = Vec::new();
    for ((name, t), file) in outputs.iter().zip(names) {
        let bytes = splitup_tensor::npy::encode(t).with_context(|| format!("output {name}"))?;
        let path = dir.join(file);
        let tmp = dir.join(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("12GiB"), Ok(12 << 30));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8g"), Ok(8 << 30));
        assert!(parse_size("12 parsecs").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1GiB").is_err());
        assert_eq!(parse_value("sr=16000"), Ok(("sr".into(), vec![16000.0])));
        assert!(parse_value("sr=abc").is_err());
    }

    #[test]
    fn ledger_urls_are_completed_or_refused() {
        for (given, url) in [
            ("127.0.0.1:7878", "http://127.0.0.1:7878"),
            ("localhost:7878", "http://localhost:7878"),
            ("ledger.example.com:443", "http://ledger.example.com:443"),
            ("[::1]:7878", "http://[::1]:7878"),
            ("http://127.0.0.1:7878/", "http://127.0.0.1:7878"),
            ("https://ledger.example.com", "https://ledger.example.com"),
            ("https://example.com/splitup", "https://example.com/splitup"),
        ] {
            assert_eq!(parse_ledger_url(given).as_deref(), Ok(url), "{given}");
        }
        for bad in [
            "",
            "lol",
            "127.0.0.1",
            "localhost:",
            ":7878",
            "localhost:port",
            "localhost:99999",
            "ftp://x:1",
            "http://",
            "http:// a b",
            "a b:1",
            "http://h:1/?q=1",
            "http://u:p@h:1",
        ] {
            let e = parse_ledger_url(bad).unwrap_err();
            assert!(e.contains("not a ledger URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn counts_and_amounts_read_right() {
        assert_eq!(plural(1u32, "task"), "1 task");
        assert_eq!(plural(2u32, "task"), "2 tasks");
        assert_eq!(plural(0u32, "node"), "0 nodes");
        assert_eq!(plural(3u32, "dispute"), "3 disputes");
        assert_eq!(plural(2u32, "inference"), "2 inferences");
        assert_eq!(plural(1u32, "inference"), "1 inference");
        assert_eq!(plural(2u32, "entry"), "2 entries");
        assert_eq!(plural(2u32, "key"), "2 keys");
        assert_eq!(parse_usdc("1900"), Ok(1_900_000_000));
        assert_eq!(parse_usdc("0.25"), Ok(250_000));
        assert_eq!(parse_usdc(".5"), Ok(500_000));
        assert!(parse_usdc("1.0000001").is_err());
        assert!(parse_usdc("-1").is_err());
        assert!(parse_usdc("").is_err());
        assert!(parse_usdc("99999999999999999").is_err());
        assert_eq!(usdc(1_900_000_000), "1900 USDC");
        assert_eq!(usdc(250_000), "0.25 USDC");
    }

    #[test]
    fn output_names_are_safe_and_unique() {
        let names = ["logits", "a/b:0", "a_b_0", "..", ""].map(String::from);
        assert_eq!(
            safe_names(&names),
            vec!["logits.npy", "a_b_0.npy", "a_b_0_1.npy", "_...npy", "_.npy"]
        );
    }
}

/// Where log lines go: the original stdout in JSON mode (one JSON document
/// per line, beside the command's own), else stdout (`node start`: the
/// log is what it prints) or stderr (everything else).
#[derive(Clone, Copy)]
pub enum LogTo {
    Stdout,
    Stderr,
}

/// A writer for one log line.
pub struct LogLine(LogTo);

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match (JSON_OUT.get(), self.0) {
            (Some(f), _) => f.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
            (None, LogTo::Stdout) => std::io::stdout().lock().write(buf),
            (None, LogTo::Stderr) => std::io::stderr().lock().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match (JSON_OUT.get(), self.0) {
            (Some(f), _) => f.lock().unwrap_or_else(|e| e.into_inner()).flush(),
            (None, LogTo::Stdout) => std::io::stdout().flush(),
            (None, LogTo::Stderr) => std::io::stderr().flush(),
        }
    }
}

/// Logs through `tracing`: level `info` unless `RUST_LOG` says otherwise
/// (`RUST_LOG=debug`, `RUST_LOG=splitup_node=debug,warn`, ...). A line
/// carries the fields of the spans it is in (`node`, `execution`, `task`,
/// `kind`); in JSON mode they are top-level fields of the line's document.
pub fn init_logging(to: LogTo) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let make = move || LogLine(to);
    let _ = if json() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(make)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(FlatJson)
            .try_init()
    } else {
        let tty = match to {
            LogTo::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
            LogTo::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(make)
            .with_ansi(tty)
            .with_target(false)
            .compact()
            .try_init()
    };
}

/// One JSON document per log line, flat: `time_ms`, `level`, `target`,
/// `message`, the fields of the spans the event is in (outermost first)
/// and the event's own fields.
struct FlatJson;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for FlatJson
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use serde_json::{Map, Value};
        let mut obj = Map::new();
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        obj.insert("time_ms".into(), ms.into());
        obj.insert("level".into(), event.metadata().level().as_str().into());
        obj.insert("target".into(), event.metadata().target().into());
        // An absent span or Option field records nothing: these stay null.
        for absent in ["node", "execution", "task", "kind"] {
            obj.insert(absent.into(), Value::Null);
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&f.fields) {
                        obj.extend(m);
                    }
                }
            }
        }
        struct Fields<'a>(&'a mut Map<String, Value>);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.insert(f.name().into(), format!("{v:?}").into());
            }
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                self.0.insert(f.name().into(), v.into());
            }
            fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
                self.0.insert(f.name().into(), v.into());
            }
            fn record_i64(&mut self, f: &tracing::field::Field, v: i64) {
                self.0.insert(f.name().into(), v.into());
            }
            fn record_bool(&mut self, f: &tracing::field::Field, v: bool) {
                self.0.insert(f.name().into(), v.into());
            }
        }
        event.record(&mut Fields(&mut obj));
        writeln!(writer, "{}", Value::Object(obj))
    }
}
