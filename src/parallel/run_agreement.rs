//! Every rank must run the same configuration on the same corpus: a rank with another
//! learning rate or batch size would silently pull the model its own way, and another
//! hidden size crashes in the first all-reduce. At start-up rank 0's description of the
//! run (the effective configuration, less the corpus path, which may differ between
//! nodes, plus the corpus manifest's sha256) goes to every rank, and each compares it
//! with its own; any difference stops every rank, naming the keys.

use anyhow::{bail, Result};

use crate::parallel::distributed::Distributed;

/// A configuration as sorted "section.key = value" lines, which `differences` compares
/// key by key.
pub fn flatten(config: &crate::config::run_config::RunConfig) -> String {
    let value = toml::Value::try_from(config).expect("the config serialises");
    let mut lines = Vec::new();
    if let toml::Value::Table(sections) = value {
        for (section, table) in sections {
            match table {
                toml::Value::Table(keys) => {
                    for (key, v) in keys {
                        lines.push(format!("{section}.{key} = {v}"));
                    }
                }
                v => lines.push(format!("{section} = {v}")),
            }
        }
    }
    lines.sort();
    lines.join("\n") + "\n"
}

/// The keys whose values differ between two "key = value" texts, as
/// "key = mine (rank 0: theirs)".
pub fn differences(mine: &str, rank0: &str) -> Vec<String> {
    let map = |text: &str| -> std::collections::BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (a, b) = (map(mine), map(rank0));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
            format!("{k} = {} (rank 0: {})", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

/// Collective: every rank calls it with its own description. When ranks differ, the
/// first differing rank's differences go to every rank, so that whichever rank ends the
/// job prints the whole cause.
pub fn check(dist: &Distributed, description: &str) -> Result<()> {
    if dist.size == 1 {
        return Ok(());
    }
    let rank0 = dist.broadcast_text(0, description);
    let differ = differences(description, &rank0);
    // The lowest differing rank, as the maximum of -rank (-inf where nothing differs).
    let mut first = [if differ.is_empty() {
        f64::NEG_INFINITY
    } else {
        -(dist.rank as f64)
    }];
    dist.all_reduce_max_f64(&mut first);
    if first[0] == f64::NEG_INFINITY {
        return Ok(());
    }
    let culprit = (-first[0]) as usize;
    let cause = dist.broadcast_text(culprit, &differ.join("; "));
    bail!("rank {culprit}'s configuration differs from rank 0's: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_keys_that_differ() {
        let rank0 = "train.learning_rate = 0.001\ntrain.micro_batch_size = 8\n";
        let mine = "train.learning_rate = 0.002\ntrain.micro_batch_size = 8\nmodel.x = 1\n";
        assert_eq!(
            differences(mine, rank0),
            [
                "model.x = 1 (rank 0: (unset))",
                "train.learning_rate = 0.002 (rank 0: 0.001)"
            ]
        );
        assert!(differences(rank0, rank0).is_empty());
    }

    #[test]
    fn a_config_flattens_to_its_keys() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let c = crate::config::run_config::RunConfig::load(&dir.join("configs/tiny.toml"), &[])
            .unwrap();
        let text = flatten(&c);
        assert!(text.contains("train.learning_rate = 0.001\n"), "{text}");
        let mut other = c.clone();
        other.train.micro_batch_size = 16;
        assert_eq!(
            differences(&flatten(&other), &text),
            ["train.micro_batch_size = 16 (rank 0: 8)"]
        );
    }
}
