//! Parsing and formatting helpers for the command line.

use anyhow::{bail, Context, Result};
use splitup_tensor::Tensor;
use std::collections::BTreeMap;
use std::path::Path;

/// Parses a size: `256MiB`, `12GiB`, `1.5GB`, `4096`, `8g` (bytes; binary
/// units KiB/MiB/GiB/TiB and the single letters k/m/g/t are powers of 1024;
/// KB/MB/GB/TB are powers of 1000).
/// A public key: 64 lowercase hex digits.
pub fn parse_pubkey(s: &str) -> Result<splitup_protocol::Pubkey, String> {
    splitup_protocol::Pubkey::from_hex(s).ok_or_else(|| format!("{s:?} is not a public key (64 lowercase hex digits)"))
}

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
    fn output_names_are_safe_and_unique() {
        let names = ["logits", "a/b:0", "a_b_0", "..", ""].map(String::from);
        assert_eq!(
            safe_names(&names),
            vec!["logits.npy", "a_b_0.npy", "a_b_0_1.npy", "_...npy", "_.npy"]
        );
    }
}
