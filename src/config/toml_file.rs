//! Reading a configuration: TOML text, `--set key=value` overrides on top (values in TOML
//! syntax, bare words taken as strings), the closed choices and required keys checked by
//! name, then the typed structure (unknown keys refused).

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;

/// A key whose value is one of `words` (see `choices::Choice::NAMES`).
pub struct ChoiceKey {
    pub key: &'static str,
    pub words: &'static [&'static str],
}

/// What a configuration type checks before serde reads it: serde alone would say "unknown
/// variant" or "missing field" without the section.
pub trait TomlConfig: DeserializeOwned {
    /// Keys with a closed set of values.
    const CHOICES: &'static [ChoiceKey];
    /// Keys without a default.
    const REQUIRED: &'static [&'static str];
    /// The range checks.
    fn validate(&self) -> Result<()>;
}

/// Reads a configuration file.
pub fn load<T: TomlConfig>(path: &std::path::Path, overrides: &[String], what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    from_text(&text, &path.display().to_string(), overrides, what)
}

/// A configuration from TOML text (`name` says where it came from, `what` what it should
/// be, for errors).
pub fn from_text<T: TomlConfig>(
    text: &str,
    name: &str,
    overrides: &[String],
    what: &str,
) -> Result<T> {
    let mut value: toml::Value =
        toml::from_str(text).with_context(|| format!("{name}: not TOML"))?;
    for o in overrides {
        apply_override(&mut value, o).with_context(|| format!("--set {o}"))?;
    }
    check_choices(&value, T::CHOICES)?;
    for key in T::REQUIRED {
        if lookup(&value, key).is_none() {
            bail!("{name}: {key} is missing (it has no default)");
        }
    }
    let config: T = match value.try_into() {
        Ok(config) => config,
        Err(e) => {
            // A key that only an override brought in is the override's fault, not the file's.
            if let Some(o) = overrides.iter().find(|o| unknown_key_of(o, &e.to_string())) {
                let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k.trim());
                bail!("--set {o}: {key} is not a key of {what} ({e})");
            }
            return Err(anyhow::Error::new(e).context(format!("{name}: not {what}")));
        }
    };
    config.validate()?;
    Ok(config)
}

/// Whether serde's `error` is "unknown field" for the last part of override `o`'s key.
fn unknown_key_of(o: &str, error: &str) -> bool {
    let key = o.split_once('=').map_or(o, |(k, _)| k).trim();
    let last = key.rsplit('.').next().unwrap_or(key);
    error.contains(&format!("unknown field `{last}`"))
}

fn lookup<'a>(root: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    key.split('.').try_fold(root, |node, part| node.get(part))
}

/// A string value outside its choice's words is refused with the key and the words.
fn check_choices(root: &toml::Value, choices: &[ChoiceKey]) -> Result<()> {
    for c in choices {
        if let Some(toml::Value::String(v)) = lookup(root, c.key) {
            if !c.words.contains(&v.as_str()) {
                bail!("{} {v:?}: expected {}", c.key, or_list(c.words));
            }
        }
    }
    Ok(())
}

/// "a, b or c".
fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Sets `section.key` (or `key`) to `raw`, parsed as a TOML value, else taken as a string.
pub fn apply_override(root: &mut toml::Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .context("expected section.key=value")?;
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed above"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let mut node = root;
    let parts: Vec<&str> = key.trim().split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let table = node.as_table_mut().context("not a table")?;
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    node.as_table_mut()
        .context("not a table")?
        .insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// `key = v`: a range check's failure, naming the key, the value and what was expected.
pub fn within(key: &str, v: f64, ok: bool, expected: &str) -> Result<()> {
    if ok && v.is_finite() {
        Ok(())
    } else {
        bail!("{key} = {v}: expected {expected}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_as_english() {
        assert_eq!(or_list(&["adamw", "lamb"]), "adamw or lamb");
        assert_eq!(or_list(&["auto", "fp32", "bf16"]), "auto, fp32 or bf16");
    }
}
