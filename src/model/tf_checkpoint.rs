//! Google's TensorFlow checkpoints (`bert_model.ckpt.index` + `.data-00000-of-00001`),
//! the format BERT-base and BioBERT were released in, read with no TensorFlow installed.
//!
//! The index is a LevelDB-format table (TensorFlow's `TensorBundle`): data blocks of
//! prefix-compressed key/value entries, an index block pointing at them, and a 48-byte
//! footer. Keys are variable names; values are `BundleEntryProto`s (dtype, shape, shard,
//! offset, size). The data file holds each tensor's little-endian bytes at its offset.
//! BERT's names map onto Hugging Face's: `bert/encoder/layer_0/attention/self/query/kernel`
//! is the transposed `bert.encoder.layer.0.attention.self.query.weight`, `gamma`/`beta` are
//! LayerNorm's weight and bias, `cls/predictions/output_bias` is `cls.predictions.bias`.
//! Optimizer slots (`adam_m`, `adam_v`) and `global_step` are skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use tch::{Kind, Tensor};

const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
const FOOTER_LEN: usize = 48;
const BLOCK_TRAILER_LEN: usize = 5;
/// TensorFlow's DataType codes.
const DT_FLOAT: u64 = 1;
const DT_INT64: u64 = 9;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BundleEntry {
    pub dtype: u64,
    pub shape: Vec<i64>,
    pub shard_id: u64,
    pub offset: u64,
    pub size: u64,
}

/// The index file of a checkpoint prefix: `PREFIX.index`.
pub fn index_path(prefix: &Path) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".index");
    PathBuf::from(s)
}

/// Finds the checkpoint prefix in a folder (`bert_model.ckpt` or any `*.index`).
pub fn find_prefix(dir: &Path) -> Option<PathBuf> {
    let preferred = dir.join("bert_model.ckpt");
    if index_path(&preferred).is_file() {
        return Some(preferred);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    found.sort();
    found.first().map(|p| p.with_extension(""))
}

/// Reads every entry of the index: variable name -> entry (the header, key "", skipped).
pub fn read_index(prefix: &Path) -> Result<BTreeMap<String, BundleEntry>> {
    let path = index_path(prefix);
    let bytes = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_table(&bytes)
        .with_context(|| format!("{}: not a TensorFlow checkpoint index", path.display()))
}

fn parse_table(bytes: &[u8]) -> Result<BTreeMap<String, BundleEntry>> {
    ensure!(bytes.len() >= FOOTER_LEN, "shorter than a table footer");
    let footer = &bytes[bytes.len() - FOOTER_LEN..];
    let magic = u64::from_le_bytes(footer[40..48].try_into().expect("8 bytes"));
    ensure!(magic == TABLE_MAGIC, "bad table magic {magic:#x}");
    let mut cursor = footer;
    let _metaindex = (varint(&mut cursor)?, varint(&mut cursor)?);
    let index = (varint(&mut cursor)?, varint(&mut cursor)?);
    let mut entries = BTreeMap::new();
    for (_, handle) in block_entries(block(bytes, index)?)? {
        let mut h = handle.as_slice();
        let data = (varint(&mut h)?, varint(&mut h)?);
        for (key, value) in block_entries(block(bytes, data)?)? {
            if key.is_empty() {
                continue; // the BundleHeaderProto
            }
            let name = String::from_utf8(key).context("a variable name is not UTF-8")?;
            let entry = parse_entry(&value).with_context(|| format!("entry of {name}"))?;
            entries.insert(name, entry);
        }
    }
    Ok(entries)
}

fn block(bytes: &[u8], (offset, size): (u64, u64)) -> Result<&[u8]> {
    let (start, end) = (offset as usize, (offset + size) as usize);
    ensure!(
        end + BLOCK_TRAILER_LEN <= bytes.len(),
        "block at {offset}+{size} runs past the end"
    );
    ensure!(
        bytes[end] == 0,
        "block at {offset} is compressed (type {}), which TensorFlow bundles do not use",
        bytes[end]
    );
    Ok(&bytes[start..end])
}

/// A block's entries: (shared, unshared, value length) varints, then the key's unshared
/// bytes and the value; the restart array at the end is not needed to read in order.
fn block_entries(block: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    ensure!(block.len() >= 4, "block too short");
    let restarts =
        u32::from_le_bytes(block[block.len() - 4..].try_into().expect("4 bytes")) as usize;
    let end = block
        .len()
        .checked_sub(4 + 4 * restarts)
        .context("restart array larger than the block")?;
    let mut data = &block[..end];
    let mut key: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    while !data.is_empty() {
        let shared = varint(&mut data)? as usize;
        let unshared = varint(&mut data)? as usize;
        let value_len = varint(&mut data)? as usize;
        ensure!(
            shared <= key.len() && unshared + value_len <= data.len(),
            "corrupt block entry"
        );
        key.truncate(shared);
        key.extend_from_slice(&data[..unshared]);
        out.push((key.clone(), data[unshared..unshared + value_len].to_vec()));
        data = &data[unshared + value_len..];
    }
    Ok(out)
}

fn varint(data: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = data.split_first().context("truncated varint")?;
        *data = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("varint longer than 64 bits")
}

/// A protobuf message as (field number, wire type, varint value or bytes).
fn proto_fields(mut data: &[u8]) -> Result<Vec<(u64, u64, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let tag = varint(&mut data)?;
        let (field, wire) = (tag >> 3, tag & 7);
        let payload = match wire {
            0 => varint(&mut data)?.to_le_bytes().to_vec(),
            1 => take(&mut data, 8)?,
            2 => {
                let n = varint(&mut data)? as usize;
                take(&mut data, n)?
            }
            5 => take(&mut data, 4)?,
            _ => bail!("unsupported protobuf wire type {wire}"),
        };
        out.push((field, wire, payload));
    }
    Ok(out)
}

fn take(data: &mut &[u8], n: usize) -> Result<Vec<u8>> {
    ensure!(data.len() >= n, "truncated protobuf field");
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head.to_vec())
}

fn as_u64(payload: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..payload.len().min(8)].copy_from_slice(&payload[..payload.len().min(8)]);
    u64::from_le_bytes(b)
}

/// BundleEntryProto: dtype = 1, shape = 2 (TensorShapeProto: dim = 2 {size = 1}),
/// shard_id = 3, offset = 4, size = 5, crc32c = 6, slices = 7.
fn parse_entry(value: &[u8]) -> Result<BundleEntry> {
    let mut entry = BundleEntry::default();
    for (field, _, payload) in proto_fields(value)? {
        match field {
            1 => entry.dtype = as_u64(&payload),
            2 => {
                for (f, _, dim) in proto_fields(&payload)? {
                    if f == 2 {
                        let size = proto_fields(&dim)?
                            .into_iter()
                            .find(|(f, _, _)| *f == 1)
                            .map_or(0, |(_, _, p)| as_u64(&p) as i64);
                        entry.shape.push(size);
                    }
                }
            }
            3 => entry.shard_id = as_u64(&payload),
            4 => entry.offset = as_u64(&payload),
            5 => entry.size = as_u64(&payload),
            7 => bail!("sliced (partitioned) variables are not supported"),
            _ => {}
        }
    }
    Ok(entry)
}

/// The Hugging Face name of a BERT TensorFlow variable and whether its matrix is
/// transposed; `None` for optimizer slots, `global_step` and other non-model variables.
pub fn hf_name(tf: &str) -> Option<(String, bool)> {
    if tf.contains("adam_m")
        || tf.contains("adam_v")
        || !(tf.starts_with("bert/") || tf.starts_with("cls/"))
    {
        return None;
    }
    let special = match tf {
        "cls/predictions/output_bias" => Some("cls.predictions.bias"),
        "cls/seq_relationship/output_weights" => Some("cls.seq_relationship.weight"),
        "cls/seq_relationship/output_bias" => Some("cls.seq_relationship.bias"),
        _ => None,
    };
    if let Some(name) = special {
        return Some((name.to_string(), false));
    }
    let mut parts: Vec<String> = Vec::new();
    let mut transpose = false;
    for part in tf.split('/') {
        if let Some(n) = part.strip_prefix("layer_") {
            parts.push("layer".into());
            parts.push(n.to_string());
            continue;
        }
        parts.push(match part {
            "kernel" => {
                transpose = true;
                "weight".into()
            }
            "gamma" => "weight".into(),
            "beta" => "bias".into(),
            _ => part.to_string(),
        });
    }
    if tf.ends_with("_embeddings") {
        parts.push("weight".into());
    }
    Some((parts.join("."), transpose))
}

/// Reads the model tensors of a checkpoint, under their Hugging Face names.
pub fn read_weights(prefix: &Path) -> Result<BTreeMap<String, Tensor>> {
    let entries = read_index(prefix)?;
    let mut data_files: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, entry) in &entries {
        let Some((hf, transpose)) = hf_name(name) else {
            continue;
        };
        if entry.dtype != DT_FLOAT {
            ensure!(
                entry.dtype == DT_INT64,
                "{name}: dtype {} is not float32",
                entry.dtype
            );
            continue;
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = data_files.entry(entry.shard_id) {
            let path = data_path(prefix, entry.shard_id)?;
            let bytes =
                std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
            slot.insert(bytes);
        }
        let data = &data_files[&entry.shard_id];
        let (start, end) = (entry.offset as usize, (entry.offset + entry.size) as usize);
        ensure!(
            end <= data.len(),
            "{name}: bytes {start}..{end} lie past the end of the data file"
        );
        let count: i64 = entry.shape.iter().product();
        ensure!(
            count as usize * 4 == entry.size as usize,
            "{name}: {} bytes for shape {:?}",
            entry.size,
            entry.shape
        );
        let values: Vec<f32> = data[start..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let mut tensor = Tensor::from_slice(&values)
            .view(entry.shape.as_slice())
            .to_kind(Kind::Float);
        if transpose {
            tensor = tensor.tr().contiguous();
        }
        out.insert(hf, tensor);
    }
    ensure!(
        !out.is_empty(),
        "{}: no BERT variables (bert/... or cls/...) in the checkpoint",
        prefix.display()
    );
    Ok(out)
}

/// `PREFIX.data-SSSSS-of-NNNNN` for a shard, whatever the shard count.
fn data_path(prefix: &Path, shard: u64) -> Result<PathBuf> {
    let dir = prefix.parent().unwrap_or(Path::new("."));
    let stem = prefix
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let wanted = format!("{stem}.data-{shard:05}-of-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&wanted))
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("{}: no data file {wanted}NNNNN", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_names_map_to_hugging_face() {
        let cases = [
            (
                "bert/encoder/layer_11/attention/self/query/kernel",
                Some(("bert.encoder.layer.11.attention.self.query.weight", true)),
            ),
            (
                "bert/encoder/layer_0/output/LayerNorm/gamma",
                Some(("bert.encoder.layer.0.output.LayerNorm.weight", false)),
            ),
            (
                "bert/embeddings/LayerNorm/beta",
                Some(("bert.embeddings.LayerNorm.bias", false)),
            ),
            (
                "bert/embeddings/word_embeddings",
                Some(("bert.embeddings.word_embeddings.weight", false)),
            ),
            (
                "bert/pooler/dense/bias",
                Some(("bert.pooler.dense.bias", false)),
            ),
            (
                "cls/predictions/transform/dense/kernel",
                Some(("cls.predictions.transform.dense.weight", true)),
            ),
            (
                "cls/predictions/output_bias",
                Some(("cls.predictions.bias", false)),
            ),
            (
                "cls/seq_relationship/output_weights",
                Some(("cls.seq_relationship.weight", false)),
            ),
            ("bert/encoder/layer_0/output/dense/kernel/adam_m", None),
            ("global_step", None),
        ];
        for (tf, want) in cases {
            let got = hf_name(tf);
            assert_eq!(got.as_ref().map(|(n, t)| (n.as_str(), *t)), want, "{tf}");
        }
    }

    #[test]
    fn varints_and_truncation() {
        let mut d: &[u8] = &[0xac, 0x02, 0x01];
        assert_eq!(varint(&mut d).unwrap(), 300);
        assert_eq!(varint(&mut d).unwrap(), 1);
        let mut d: &[u8] = &[0x80];
        assert!(varint(&mut d).is_err());
    }
}
