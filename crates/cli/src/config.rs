//! Where the network commands find the ledger and the key file.
//!
//! Precedence, first found wins: the flag (`--ledger`, `--key`), the
//! environment (`SPLITUP_LEDGER`, `SPLITUP_KEY`; clap reads both), the
//! config file (`ledger = "…"`, `key = "…"`), then the defaults
//! ([`crate::util::LEDGER_DEFAULT`], `HOME/key.json`).
//!
//! `HOME` here is the splitup directory: `$SPLITUP_HOME` if set, else
//! `$XDG_CONFIG_HOME/splitup`, else `~/.config/splitup`. The config file is
//! `HOME/config.toml`; a relative `key` in it is relative to `HOME`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What the config file may say. Unknown names are refused (a misspelt
/// `leger = …` would otherwise be silently ignored).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ledger: Option<String>,
    pub key: Option<PathBuf>,
}

/// The splitup directory (see the module's documentation).
pub fn home() -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(h) = var("SPLITUP_HOME") {
        return Ok(h);
    }
    if let Some(x) = var("XDG_CONFIG_HOME").filter(|p| p.is_absolute()) {
        return Ok(x.join("splitup"));
    }
    match var("HOME") {
        Some(h) => Ok(h.join(".config").join("splitup")),
        None => bail!("neither SPLITUP_HOME nor HOME is set: give --key FILE (or SPLITUP_KEY) and --ledger URL"),
    }
}

/// `HOME/config.toml`.
pub fn config_path() -> Result<PathBuf> {
    Ok(home()?.join("config.toml"))
}

/// `HOME/key.json`: where `splitup keys new` writes a key when given no path.
pub fn default_key_path() -> Result<PathBuf> {
    Ok(home()?.join("key.json"))
}

/// The config file, if there is one (none: every field absent).
pub fn load() -> Result<Config> {
    let Ok(path) = config_path() else {
        return Ok(Config::default());
    };
    load_from(&path)
}

fn load_from(path: &Path) -> Result<Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read the config file {}", path.display())),
    };
    let mut c: Config = toml::from_str(&text).with_context(|| {
        format!(
            "the config file {} is not valid (it takes `ledger = \"URL\"` and `key = \"FILE\"`)",
            path.display()
        )
    })?;
    if let Some(l) = &c.ledger {
        c.ledger = Some(
            crate::util::parse_ledger_url(l)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("`ledger` in {}", path.display()))?,
        );
    }
    if let (Some(k), Some(dir)) = (&c.key, path.parent()) {
        if k.is_relative() {
            c.key = Some(dir.join(k));
        }
    }
    Ok(c)
}

/// The ledger URL: `given` (the flag or `SPLITUP_LEDGER`, already checked
/// by clap), else the config file's, else the default.
pub fn ledger(given: Option<&str>) -> Result<String> {
    if let Some(g) = given {
        return Ok(g.to_string());
    }
    Ok(load()?
        .ledger
        .unwrap_or_else(|| crate::util::LEDGER_DEFAULT.to_string()))
}

/// Where the key comes from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `--key` or `SPLITUP_KEY`.
    Given,
    Config,
    Default,
}

/// The key file: `given` (the flag or `SPLITUP_KEY`), else the config
/// file's, else `HOME/key.json`.
pub fn key_path(given: Option<&Path>) -> Result<(PathBuf, KeySource)> {
    if let Some(g) = given {
        return Ok((g.to_path_buf(), KeySource::Given));
    }
    if let Some(k) = load()?.key {
        return Ok((k, KeySource::Config));
    }
    Ok((default_key_path()?, KeySource::Default))
}

/// Reads the key file that [`key_path`] names, saying where it looked and
/// how to make one when it is missing.
pub fn read_key(given: Option<&Path>) -> Result<(PathBuf, splitup_protocol::Keypair)> {
    let (path, source) = key_path(given)?;
    if !path.exists() {
        match source {
            KeySource::Given => bail!("no key file at {}", path.display()),
            KeySource::Config => bail!(
                "no key file at {} (named by `key` in {})",
                path.display(),
                config_path().map(|p| p.display().to_string()).unwrap_or_default()
            ),
            KeySource::Default => bail!(
                "no key file at {} (the default): create one with `splitup keys new`, or give --key FILE (or SPLITUP_KEY, or `key = \"FILE\"` in {})",
                path.display(),
                config_path().map(|p| p.display().to_string()).unwrap_or_default()
            ),
        }
    }
    let key = splitup_ledger::keys::read(&path)?;
    Ok((path, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_is_checked_and_relative_keys_are_beside_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        assert!(load_from(&p).unwrap().ledger.is_none(), "no file: nothing set");
        std::fs::write(&p, "ledger = \"localhost:9000\"\nkey = \"k.json\"\n").unwrap();
        let c = load_from(&p).unwrap();
        assert_eq!(c.ledger.as_deref(), Some("http://localhost:9000"));
        assert_eq!(c.key, Some(d.path().join("k.json")));
        std::fs::write(&p, "leger = \"localhost:9000\"\n").unwrap();
        let e = format!("{:#}", load_from(&p).unwrap_err());
        assert!(e.contains("leger"), "{e}");
        std::fs::write(&p, "ledger = \"not a url\"\n").unwrap();
        let e = format!("{:#}", load_from(&p).unwrap_err());
        assert!(e.contains("not a ledger URL"), "{e}");
    }
}
