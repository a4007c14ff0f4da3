//! External data: tensors that a model stores beside its `.onnx` file.
//!
//! A model file is hostile until checked, and an external-data reference is
//! a file path chosen by whoever wrote the model. So external data is read
//! only when a model is loaded from a file, only for initializers, and only
//! from files inside the model's own directory: absolute paths, `..`
//! components and links that lead out of the directory are refused, as are
//! offsets and lengths outside the file or not matching the tensor's size.
//! What is read becomes ordinary embedded data, so every plan and task file
//! written afterwards is self-contained. Tensors inside nodes (attribute
//! tensors) must always be embedded: the allow-list refuses them otherwise.

use crate::onnx::ModelProto;
use std::path::{Component, Path};

/// Upper bound on the external bytes one model may pull in (its weights).
pub const EXTERNAL_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;

/// Replaces every external initializer of `model` with its bytes, read from
/// files under `dir` (the model's directory). Returns the bytes read.
pub fn resolve(model: &mut ModelProto, dir: &Path) -> Result<u64, String> {
    let Some(g) = model.graph.as_mut() else {
        return Ok(0);
    };
    let root = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the model's directory {}: {e}", dir.display()))?;
    let mut total = 0u64;
    for t in &mut g.initializer {
        if !crate::allow::is_external(t) {
            continue;
        }
        let mut location = None;
        let (mut offset, mut length) = (0u64, None);
        for kv in &t.external_data {
            match kv.key.as_str() {
                "location" => location = Some(kv.value.clone()),
                "offset" => {
                    offset = kv
                        .value
                        .parse()
                        .map_err(|_| bad(&t.name, "its offset is not a number"))?
                }
                "length" => {
                    length = Some(
                        kv.value
                            .parse::<u64>()
                            .map_err(|_| bad(&t.name, "its length is not a number"))?,
                    )
                }
                _ => {}
            }
        }
        let location = location.ok_or_else(|| bad(&t.name, "it names no location"))?;
        let rel = Path::new(&location);
        if location.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(bad(
                &t.name,
                &format!("its location {location:?} is not a plain relative path inside the model's directory"),
            ));
        }
        let path = root.join(rel);
        let real = path
            .canonicalize()
            .map_err(|e| bad(&t.name, &format!("cannot open {location:?}: {e}")))?;
        if !real.starts_with(&root) {
            return Err(bad(
                &t.name,
                &format!("{location:?} leads outside the model's directory (a link?)"),
            ));
        }
        let dtype = crate::model::dtype_of(t.data_type).map_err(|e| bad(&t.name, &e))?;
        let count = t
            .dims
            .iter()
            .try_fold(1u64, |a, &d| u64::try_from(d).ok().and_then(|d| a.checked_mul(d)))
            .ok_or_else(|| bad(&t.name, "its shape is negative or overflows"))?;
        let need = count
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| bad(&t.name, "its shape overflows"))?;
        if length.is_some_and(|l| l != need) {
            return Err(bad(
                &t.name,
                &format!("its length {} does not match its shape ({need} bytes)", length.unwrap()),
            ));
        }
        total = total.saturating_add(need);
        if total > EXTERNAL_BYTES_MAX {
            return Err(bad(
                &t.name,
                &format!("external data exceeds {EXTERNAL_BYTES_MAX} bytes"),
            ));
        }
        let meta = std::fs::metadata(&real).map_err(|e| bad(&t.name, &e.to_string()))?;
        let file_len = meta.len();
        if !meta.is_file() {
            return Err(bad(&t.name, &format!("{location:?} is not a regular file")));
        }
        // A model must not turn a secret into a weight: a SplitUp key file
        // (a small JSON document with a "secret") or a PEM/OpenSSH key is
        // never tensor data. (File modes cannot tell: `onnx` itself writes
        // external data files as 0600.)
        if meta.len() <= SECRET_FILE_BYTES_MAX {
            let head = std::fs::read(&real).map_err(|e| bad(&t.name, &e.to_string()))?;
            if looks_like_a_secret(&head) {
                return Err(bad(
                    &t.name,
                    &format!("{location:?} is a key file, not tensor data; weights are never read from key files"),
                ));
            }
        }
        let end = offset
            .checked_add(need)
            .ok_or_else(|| bad(&t.name, "offset overflows"))?;
        if end > file_len {
            return Err(bad(
                &t.name,
                &format!("bytes {offset}..{end} lie beyond the end of {location:?} ({file_len} bytes)"),
            ));
        }
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&real).map_err(|e| bad(&t.name, &e.to_string()))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| bad(&t.name, &e.to_string()))?;
        let mut data = vec![0u8; need as usize];
        f.read_exact(&mut data).map_err(|e| bad(&t.name, &e.to_string()))?;
        t.raw_data = data;
        t.external_data.clear();
        t.data_location = 0;
    }
    Ok(total)
}

fn bad(name: &str, why: &str) -> String {
    format!("initializer {name:?} uses external data, and {why}")
}

/// Key files are small; larger files are not inspected.
const SECRET_FILE_BYTES_MAX: u64 = 64 * 1024;

/// A SplitUp key file (`{"secret": …}`), or a PEM / OpenSSH private key.
fn looks_like_a_secret(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let t = text.trim_start();
    (t.starts_with('{') && t.contains("\"secret\"")) || t.starts_with("-----BEGIN") || t.contains("PRIVATE KEY-----")
}
