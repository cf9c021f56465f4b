//! `biobert embed`: what Google's `extract_features.py` does. Sentences in (one a line),
//! the hidden states of chosen layers out, for every WordPiece token with `[CLS]` and
//! `[SEP]`, batched, on the CPU or a GPU.
//!
//! Safetensors output is ragged, without padding: `input_ids` [tokens] (i64), `offsets`
//! [sentences + 1] (i64; sentence i is rows offsets[i]..offsets[i+1]), and one
//! `layer.L` [tokens, hidden] (f32) per requested layer (-1 is the last, 0 the
//! embeddings). JSON lines follow extract_features.py's layout.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::choices::Precision;
use crate::model::bert::{Batch, Bert};
use crate::model::hf_checkpoint;
use crate::model::hf_folder::{encode, special_id};
use crate::runtime::device_selection;
use corpus_tools::tokenizer::WordPieceTokenizer;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Safetensors,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// A Hugging Face BERT folder or one of our checkpoints (config.json, weights, vocab.txt).
    #[arg(long)]
    pub model: PathBuf,
    /// Sentences, one a line (UTF-8).
    #[arg(long)]
    pub input: PathBuf,
    /// The features file to write (a new file: see --force).
    #[arg(long)]
    pub output: PathBuf,
    /// Replace --output if it exists (never the input or a file of the model folder).
    #[arg(long)]
    pub force: bool,
    /// Layers to output, comma-separated: -1 is the last layer, 0 the embeddings.
    #[arg(long, default_value = "-1", allow_hyphen_values = true)]
    pub layers: String,
    #[arg(long, value_enum, default_value_t = Format::Safetensors)]
    pub format: Format,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Longer sentences are truncated to this many tokens, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
    /// cpu, cuda, cuda:N, or auto (the first GPU when there is one).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// fp32, bf16 matrix products (faster on GPUs; LayerNorm and outputs stay fp32), or
    /// auto (bf16 on GPUs, fp32 on CPUs).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
}

pub fn run(args: &EmbedArgs) -> Result<()> {
    check_output(args)?;
    let device = device_selection::parse(&args.device)?;
    let config = hf_checkpoint::read_config(&args.model)?;
    let vs = VarStore::new(Device::Cpu);
    let mut bert = Bert::new(&vs.root(), &config);
    bert.compute = args.precision.compute_kind(device);
    let (_, report) = hf_checkpoint::load_folder(&vs, &args.model)?;
    report.require_encoder(&args.model.display().to_string())?;
    let mut vs = vs;
    vs.set_device(device);
    let tokenizer = WordPieceTokenizer::load(
        &args.model.join("vocab.txt"),
        crate::model::hf_folder::lowercase_setting(&args.model),
    )?;
    let layers = parse_layers(&args.layers, config.num_hidden_layers)?;
    let max_len = args
        .max_seq_len
        .clamp(2, config.max_position_embeddings as usize);
    let sentences = read_sentences(&args.input)?;
    let special = |t: &str| special_id(&tokenizer, t, &args.model);
    let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
    let ids: Vec<Vec<i64>> = sentences
        .iter()
        .map(|s| encode(&tokenizer, s, max_len, cls, sep))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let mut per_layer: Vec<Vec<Tensor>> = layers.iter().map(|_| Vec::new()).collect();
    let mut last_report = Instant::now();
    for (n, chunk) in ids.chunks(args.batch_size.max(1)).enumerate() {
        let states = tch::no_grad(|| embed_batch(&bert, chunk, &layers, device));
        for (slot, s) in per_layer.iter_mut().zip(states) {
            slot.extend(s);
        }
        if last_report.elapsed().as_secs() >= 10 {
            let done = (n + 1) * args.batch_size;
            eprintln!(
                "embed: {done}/{} sentences, {:.0}/s",
                ids.len(),
                done as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    match args.format {
        Format::Safetensors => write_safetensors(&args.output, &ids, &layers, per_layer)?,
        Format::Jsonl => write_jsonl(&args.output, &ids, &tokenizer, &layers, &per_layer)?,
    }
    println!(
        "embed: {} sentences, {} tokens, layers {:?}, {:.1}s on {:?} -> {}",
        ids.len(),
        ids.iter().map(Vec::len).sum::<usize>(),
        layers,
        started.elapsed().as_secs_f64(),
        device,
        args.output.display()
    );
    Ok(())
}

/// Layer indices as given (-1 = last), checked against the model's depth.
fn parse_layers(spec: &str, depth: i64) -> Result<Vec<i64>> {
    spec.split(',')
        .map(|s| {
            let l: i64 = s
                .trim()
                .parse()
                .with_context(|| format!("--layers: {s:?} is not a number"))?;
            if l > depth || l < -(depth + 1) {
                bail!(
                    "--layers: {l} is outside the model's {depth} layers (-{} ..= {depth})",
                    depth + 1
                );
            }
            Ok(l)
        })
        .collect()
}

fn read_sentences(path: &Path) -> Result<Vec<String>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: line {}: not UTF-8 text", path.display(), n + 1))?;
        out.push(line);
    }
    if out.is_empty() {
        bail!("{}: no sentences", path.display());
    }
    Ok(out)
}

/// Runs one padded batch; returns, per layer, each sentence's [len, hidden] on the CPU.
fn embed_batch(
    bert: &Bert,
    batch: &[Vec<i64>],
    layers: &[i64],
    device: Device,
) -> Vec<Vec<Tensor>> {
    let t = batch.iter().map(Vec::len).max().unwrap_or(0) as i64;
    let mut ids = vec![0i64; batch.len() * t as usize];
    let mut mask = vec![0i64; batch.len() * t as usize];
    for (b, sentence) in batch.iter().enumerate() {
        for (i, &id) in sentence.iter().enumerate() {
            ids[b * t as usize + i] = id;
            mask[b * t as usize + i] = 1;
        }
    }
    let shape = [batch.len() as i64, t];
    let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
    let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
    let padded = batch.iter().any(|s| (s.len() as i64) < t);
    let types = ids.zeros_like();
    let encoded = bert.encode(
        &Batch {
            input_ids: &ids,
            token_type_ids: &types,
            attention_mask: padded.then_some(&mask),
            packing: None,
        },
        false,
        true,
    );
    let count = encoded.hidden_states.len() as i64;
    layers
        .iter()
        .map(|&l| {
            let index = if l < 0 { count + l } else { l };
            let states = encoded.hidden_states[index as usize]
                .to_kind(Kind::Float)
                .to_device(Device::Cpu);
            batch
                .iter()
                .enumerate()
                .map(|(b, s)| states.get(b as i64).narrow(0, 0, s.len() as i64))
                .collect()
        })
        .collect()
}

/// The output must be a new file (or, with --force, any file but the input and the
/// model's own files).
fn check_output(args: &EmbedArgs) -> Result<()> {
    let out = &args.output;
    let canonical = |p: &Path| std::fs::canonicalize(p).ok();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let out_dir = canonical(parent);
    if out.exists() || out_dir.is_some() {
        let same = |p: &Path| canonical(p).is_some() && canonical(p) == canonical(out);
        if same(&args.input) {
            bail!("--output {}: is the input file", out.display());
        }
        if out_dir.is_some() && out_dir == canonical(&args.model) {
            bail!(
                "--output {}: is inside the model folder {}; write the features elsewhere",
                out.display(),
                args.model.display()
            );
        }
    }
    if out.exists() && !args.force {
        bail!(
            "--output {}: exists; embed writes a new file (--force replaces it)",
            out.display()
        );
    }
    Ok(())
}

fn write_safetensors(
    path: &Path,
    ids: &[Vec<i64>],
    layers: &[i64],
    per_layer: Vec<Vec<Tensor>>,
) -> Result<()> {
    let flat: Vec<i64> = ids.iter().flatten().copied().collect();
    let mut offsets = vec![0i64];
    for s in ids {
        offsets.push(offsets.last().copied().unwrap_or(0) + s.len() as i64);
    }
    let mut tensors = vec![
        ("input_ids".to_string(), Tensor::from_slice(&flat)),
        ("offsets".to_string(), Tensor::from_slice(&offsets)),
    ];
    for (l, states) in layers.iter().zip(per_layer) {
        tensors.push((format!("layer.{l}"), Tensor::cat(&states, 0)));
    }
    corpus_tools::atomic_file::write_via(path, |tmp| {
        Tensor::write_safetensors(&tensors, tmp)
            .with_context(|| format!("writing {}", tmp.display()))
    })
}

fn write_jsonl(
    path: &Path,
    ids: &[Vec<i64>],
    tokenizer: &WordPieceTokenizer,
    layers: &[i64],
    per_layer: &[Vec<Tensor>],
) -> Result<()> {
    let mut out = corpus_tools::atomic_file::AtomicFile::create(path)?;
    for (i, sentence) in ids.iter().enumerate() {
        let features: Vec<serde_json::Value> = sentence
            .iter()
            .enumerate()
            .map(|(t, &id)| {
                let layer_values: Vec<serde_json::Value> = layers
                    .iter()
                    .zip(per_layer)
                    .map(|(l, states)| {
                        let row = Vec::<f32>::try_from(states[i].get(t as i64)).unwrap_or_default();
                        serde_json::json!({ "index": l, "values": row })
                    })
                    .collect();
                serde_json::json!({ "token": tokenizer.token(id as u32).unwrap_or("[?]"), "layers": layer_values })
            })
            .collect();
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "linex_index": i, "features": features }),
        )?;
        out.write_all(b"\n")?;
    }
    out.commit()?;
    Ok(())
}
