//! Samples to batches, with a background thread that prepares the next steps' batches
//! while the current one trains.
//!
//! The global batch of step s holds samples s·G .. (s+1)·G, G = micro-batch × accumulation ×
//! world size; micro-batch m of rank r takes samples s·G + (m·world + r)·B .. + B. So the
//! union over ranks of micro-batch m is the same as one rank with micro-batch world·B.

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};
use tch::{Device, Tensor};

use std::path::Path;

use anyhow::bail;

use crate::config::run_config::DataConfig;
use crate::data::corpus::Corpus;
use crate::data::instance_index::{BuildReport, EpochIndex, IndexStore, Part, RECORD};
use crate::data::instances::{self, Example, InstanceConfig, SpecialTokens};
use crate::model::packing::Packing;
use crate::runtime::pinned_memory;
use crate::runtime::thread_budget;

/// Held-out instances use their own epoch key, so they never depend on training epochs.
const HELDOUT_EPOCH: u64 = u64::MAX;

/// Examples of one part of the corpus (training or held-out), read through the on-disk
/// instance index. Per rank it holds the mapped index of the current epoch and the epoch
/// sizes (8 B an epoch): nothing per document or per instance.
pub struct Sampler {
    corpus: Arc<Corpus>,
    store: Arc<IndexStore>,
    part: Part,
    documents: usize,
    config: InstanceConfig,
    special: Arc<SpecialTokens>,
    /// Instance count of each epoch, as far as known.
    epoch_sizes: Vec<u64>,
    /// data.index_threads.
    index_threads: usize,
    current: Option<(u64, EpochIndex)>,
}

pub struct TensorBatch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    pub attention_mask: Tensor,
    /// The masked positions as indices into the flattened [batch x seq] tokens, and their
    /// original ids: computed here so that the trainer never asks the device for them.
    pub mlm_positions: Tensor,
    /// The same positions as indices into the packed rows of the real tokens (equal to
    /// `mlm_positions` when nothing is padding).
    pub mlm_rows: Tensor,
    /// The real tokens packed into rows, for a batch with padding when asked for
    /// (`train.unpad`).
    pub packing: Option<Packing>,
    pub mlm_targets: Tensor,
    pub nsp_labels: Tensor,
    /// Real (non-padding) tokens in the batch.
    pub tokens: i64,
    pub sequences: i64,
    /// Positions with an MLM label.
    pub masked: i64,
    /// The global index of the batch's first sample: keys the dropout draws of the
    /// micro-batch, so that ranks differ and a resumed run repeats them.
    pub first_sample: u64,
}

impl TensorBatch {
    fn try_map(
        &self,
        f: impl Fn(&Tensor) -> anyhow::Result<Tensor>,
    ) -> anyhow::Result<TensorBatch> {
        Ok(TensorBatch {
            input_ids: f(&self.input_ids)?,
            token_type_ids: f(&self.token_type_ids)?,
            attention_mask: f(&self.attention_mask)?,
            mlm_positions: f(&self.mlm_positions)?,
            mlm_rows: f(&self.mlm_rows)?,
            packing: self.packing.as_ref().map(|p| p.try_map(&f)).transpose()?,
            mlm_targets: f(&self.mlm_targets)?,
            nsp_labels: f(&self.nsp_labels)?,
            tokens: self.tokens,
            sequences: self.sequences,
            masked: self.masked,
            first_sample: self.first_sample,
        })
    }

    /// The batch in page-locked host memory, for asynchronous copies to a GPU.
    pub fn pinned(&self) -> anyhow::Result<TensorBatch> {
        self.try_map(pinned_memory::pin)
    }

    /// The batch on `device`; from pinned memory the copies do not block the host (torch's
    /// host allocator keeps the pinned block until the copy is done).
    pub fn to_device(&self, device: Device) -> anyhow::Result<TensorBatch> {
        self.try_map(|t| {
            let non_blocking = matches!(device, Device::Cuda(_)) && pinned_memory::is_pinned(t);
            Ok(t.f_to_device_(device, t.kind(), non_blocking, false)?)
        })
    }

    /// Whether any sequence is shorter than the batch's width. Without padding the encoder
    /// passes no attention mask, which lets SDPA take its flash kernel.
    pub fn has_padding(&self) -> bool {
        let width = self.input_ids.size().last().copied().unwrap_or(0);
        self.tokens < self.sequences * width
    }

    /// Padding positions in the batch as collated (padded to its longest sequence).
    pub fn padding(&self) -> i64 {
        let width = self.input_ids.size().last().copied().unwrap_or(0);
        self.sequences * width - self.tokens
    }
}

/// The training and held-out samplers of a run's `[data]` settings: the documents split
/// by `heldout_fraction`, instances as Google's algorithm makes them, indexed under
/// `index_root` (see `instance_index`). `corpus_sha256` is the manifest's hash.
pub fn samplers(
    corpus: &Arc<Corpus>,
    corpus_sha256: &str,
    data: &DataConfig,
    index_root: &Path,
) -> anyhow::Result<(Sampler, Sampler)> {
    let special = Arc::new(SpecialTokens::from_vocab(&corpus.vocab)?);
    let config = InstanceConfig {
        max_seq_len: data.max_seq_len,
        short_seq_prob: data.short_seq_prob,
        masked_lm_prob: data.masked_lm_prob,
        max_predictions_per_seq: data.max_predictions_per_seq,
        whole_word_masking: data.whole_word_masking,
        seed: data.seed,
    };
    let store = Arc::new(IndexStore::open(
        index_root,
        corpus.clone(),
        corpus_sha256,
        &config,
        data.heldout_fraction,
    )?);
    let (train, heldout) = instances::split_counts(corpus, data.heldout_fraction, data.seed);
    let sampler = |part, documents| Sampler {
        corpus: corpus.clone(),
        store: store.clone(),
        part,
        documents,
        config: config.clone(),
        special: special.clone(),
        epoch_sizes: Vec::new(),
        index_threads: data.index_threads,
        current: None,
    };
    Ok((sampler(Part::Train, train), sampler(Part::Heldout, heldout)))
}

impl Sampler {
    pub fn documents(&self) -> usize {
        self.documents
    }

    pub fn index_dir(&self) -> &Path {
        &self.store.dir
    }

    /// Maps epoch `epoch`'s index (building it, node-wide, when no one has), then starts
    /// building the next epoch's in the background and removes indexes two epochs old.
    fn open_epoch(&mut self, epoch: u64) -> anyhow::Result<()> {
        if self.current.as_ref().is_some_and(|(e, _)| *e == epoch) {
            return Ok(());
        }
        let threads = self.index_threads;
        let (index, report) = self.store.epoch(self.part, epoch, || {
            thread_budget::index_pool(true, threads)
        })?;
        if let Some(r) = report {
            println!("{}", build_line(&self.store, self.part, epoch, &r, ""));
        }
        if self.part == Part::Train {
            self.store.remove_before(epoch.saturating_sub(1));
            prepare_in_background(self.store.clone(), epoch + 1);
        }
        self.current = Some((epoch, index));
        Ok(())
    }

    /// Instances in training epoch `epoch`: the count its build recorded, or its index's.
    pub fn epoch_size(&mut self, epoch: u64) -> anyhow::Result<u64> {
        if let Some(&n) = self.epoch_sizes.get(epoch as usize) {
            return Ok(n);
        }
        let n = match self.store.epoch_size(epoch) {
            Some(n) => n,
            None => {
                self.open_epoch(epoch)?;
                let n = self.current.as_ref().expect("opened above").1.len();
                self.store.write_epoch_size(epoch, n)?;
                n
            }
        };
        if n == 0 {
            bail!(
                "{}: the corpus yields no training instances (documents too short for any sentence pair)",
                self.corpus.dir.display()
            );
        }
        if epoch as usize == self.epoch_sizes.len() {
            self.epoch_sizes.push(n);
        }
        Ok(n)
    }

    /// (epoch, index in epoch) of a global training sample.
    fn locate(&mut self, sample: u64) -> anyhow::Result<(u64, u64)> {
        let (mut start, mut epoch) = (0u64, 0u64);
        loop {
            let size = self.epoch_size(epoch)?;
            if sample < start + size {
                return Ok((epoch, sample - start));
            }
            start += size;
            epoch += 1;
        }
    }

    /// Maps (or builds) the index that holds `sample` (the held-out sampler: its index).
    pub fn prepare(&mut self, sample: u64) -> anyhow::Result<()> {
        if self.part == Part::Heldout {
            return self.open_epoch(HELDOUT_EPOCH);
        }
        let (epoch, _) = self.locate(sample)?;
        self.open_epoch(epoch)
    }

    pub fn example(&mut self, sample: u64) -> anyhow::Result<Example> {
        let (epoch, index) = self.locate(sample)?;
        self.open_epoch(epoch)?;
        let sentences = self.corpus.sequences();
        let instance = self
            .current
            .as_ref()
            .expect("opened above")
            .1
            .get_checked(index, sentences)?;
        instances::make_example(
            &self.corpus,
            &instance,
            &self.config,
            &self.special,
            epoch,
            sample,
        )
    }

    /// A held-out example (the sampler must be the held-out one); `None` when there are
    /// no held-out documents.
    pub fn heldout_example(&mut self, index: u64) -> anyhow::Result<Option<Example>> {
        self.open_epoch(HELDOUT_EPOCH)?;
        let list = &self.current.as_ref().expect("opened above").1;
        if list.is_empty() {
            return Ok(None);
        }
        let instance = list.get_checked(index % list.len(), self.corpus.sequences())?;
        instances::make_example(
            &self.corpus,
            &instance,
            &self.config,
            &self.special,
            HELDOUT_EPOCH,
            index,
        )
        .map(Some)
    }
}

/// Builds training epoch `epoch`'s index on a thread with the rank's own share of the
/// cores, unless it exists or another process builds it: the epoch boundary then finds it
/// ready. A failure is said and left to the boundary, which builds (or fails) in turn.
fn prepare_in_background(store: Arc<IndexStore>, epoch: u64) {
    std::thread::spawn(move || {
        let built = thread_budget::index_pool(false, 0)
            .and_then(|pool| store.build_if_free(Part::Train, epoch, &pool));
        match built {
            Ok(Some(r)) => println!(
                "{}",
                build_line(&store, Part::Train, epoch, &r, " in the background")
            ),
            Ok(None) => {}
            Err(e) => eprintln!(
                "instance index: building epoch {epoch} in the background failed ({e:#}); it is built when needed"
            ),
        }
    });
}

fn build_line(store: &IndexStore, part: Part, epoch: u64, r: &BuildReport, how: &str) -> String {
    let what = match part {
        Part::Train => format!("training epoch {epoch}"),
        Part::Heldout => "held-out".to_string(),
    };
    format!(
        "instance index: {what}: {} instances ({:.1} MB) built{how} on {} in {:.2} s (count {:.2} s, fill {:.2} s, shuffle {:.2} s, write {:.2} s; {} threads) in {}",
        r.instances,
        (r.instances * RECORD as u64) as f64 / 1e6,
        crate::data::build_lock::hostname(),
        r.total_s(),
        r.count_s,
        r.fill_s,
        r.shuffle_s,
        r.write_s,
        r.threads,
        store.dir.display()
    )
}

/// Pads examples to the longest in the batch; with `pack`, a padded batch also gets its
/// packing (`train.unpad`).
pub fn collate(examples: &[Example], pack: bool) -> TensorBatch {
    let t = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(1);
    let b = examples.len();
    let (mut ids, mut types, mut mask) = (vec![0i64; b * t], vec![0i64; b * t], vec![0i64; b * t]);
    let (mut positions, mut rows, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    let mut tokens = 0i64;
    for (i, e) in examples.iter().enumerate() {
        for (j, &id) in e.input_ids.iter().enumerate() {
            ids[i * t + j] = id;
            types[i * t + j] = e.token_type_ids[j];
            mask[i * t + j] = 1;
            if e.mlm_labels[j] != -100 {
                positions.push((i * t + j) as i64);
                rows.push(tokens + j as i64);
                targets.push(e.mlm_labels[j]);
            }
        }
        tokens += e.input_ids.len() as i64;
    }
    let lengths: Vec<usize> = examples.iter().map(|e| e.input_ids.len()).collect();
    let padded = lengths.iter().any(|&l| l < t);
    let shape = [b as i64, t as i64];
    let masked = positions.len() as i64;
    TensorBatch {
        input_ids: Tensor::from_slice(&ids).view(shape),
        token_type_ids: Tensor::from_slice(&types).view(shape),
        attention_mask: Tensor::from_slice(&mask).view(shape),
        mlm_positions: Tensor::from_slice(&positions),
        mlm_rows: Tensor::from_slice(&rows),
        packing: (pack && padded).then(|| Packing::from_lengths(&lengths, t)),
        mlm_targets: Tensor::from_slice(&targets),
        nsp_labels: Tensor::from_slice(&examples.iter().map(|e| e.nsp_label).collect::<Vec<_>>()),
        tokens,
        sequences: b as i64,
        masked,
        first_sample: 0,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub micro_batch: u64,
    pub accumulation: u64,
    pub world_size: u64,
    pub rank: u64,
}

impl Layout {
    pub fn global_batch(&self) -> u64 {
        self.micro_batch * self.accumulation * self.world_size
    }

    /// This rank's samples for micro-batch `m` of step `s`.
    pub fn samples(&self, step: u64, micro: u64) -> std::ops::Range<u64> {
        let start =
            step * self.global_batch() + (micro * self.world_size + self.rank) * self.micro_batch;
        start..start + self.micro_batch
    }
}

/// Prepares each step's micro-batches on a background thread, `depth` steps ahead. For a
/// GPU, the batches come in page-locked (pinned) memory, so that the copies to the device
/// can be asynchronous (`TensorBatch::to_device`). A batch that cannot be pinned ends the
/// stream with the error.
pub fn prefetch(
    mut sampler: Sampler,
    layout: Layout,
    first_step: u64,
    last_step: u64,
    depth: usize,
    device: Device,
    pack: bool,
) -> Receiver<anyhow::Result<Vec<TensorBatch>>> {
    let (tx, rx) = bounded(depth.max(1));
    let stall_at = crate::runtime::fault_injection::loader_stall_step();
    std::thread::spawn(move || {
        for step in first_step..last_step {
            if stall_at == Some(step) {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
            let batches: anyhow::Result<Vec<TensorBatch>> = (0..layout.accumulation)
                .map(|m| {
                    let samples = layout.samples(step, m);
                    let examples: Vec<Example> = samples
                        .clone()
                        .map(|s| sampler.example(s))
                        .collect::<anyhow::Result<_>>()?;
                    let mut batch = collate(&examples, pack);
                    batch.first_sample = samples.start;
                    match device {
                        Device::Cuda(_) => batch.pinned(),
                        _ => Ok(batch),
                    }
                })
                .collect();
            let failed = batches.is_err();
            if tx.send(batches).is_err() || failed {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collate_packed(examples: &[Example]) -> TensorBatch {
        collate(examples, true)
    }

    fn example(ids: &[i64], labels: &[i64]) -> Example {
        Example {
            input_ids: ids.to_vec(),
            token_type_ids: vec![0; ids.len()],
            mlm_labels: labels.to_vec(),
            nsp_label: 1,
        }
    }

    #[test]
    fn a_batch_knows_whether_it_is_padded() {
        let full = collate_packed(&[
            example(&[1, 2, 3], &[-100; 3]),
            example(&[4, 5, 6], &[-100; 3]),
        ]);
        assert!(!full.has_padding());
        assert_eq!(full.padding(), 0);
        let ragged = collate_packed(&[example(&[1, 2, 3], &[-100; 3]), example(&[4], &[-100])]);
        assert!(ragged.has_padding());
        assert_eq!(ragged.padding(), 2);
    }

    #[test]
    fn collate_pads_and_lists_the_masked_positions_of_the_padded_batch() {
        let batch = collate_packed(&[
            example(&[101, 103, 7, 102], &[-100, 55, -100, -100]),
            example(&[101, 103, 102], &[-100, 66, -100]),
        ]);
        assert_eq!(batch.input_ids.size(), [2, 4]);
        assert_eq!((batch.tokens, batch.sequences, batch.masked), (7, 2, 2));
        // Row 1 starts at 4 in the flattened [2 x 4] batch.
        assert_eq!(Vec::<i64>::try_from(&batch.mlm_positions).unwrap(), [1, 5]);
        assert_eq!(Vec::<i64>::try_from(&batch.mlm_targets).unwrap(), [55, 66]);
        let mask = Vec::<i64>::try_from(batch.attention_mask.view([-1])).unwrap();
        assert_eq!(mask, [1, 1, 1, 1, 1, 1, 1, 0]);
        // Packed, row 1 starts at 4 too (row 0 has no padding), and is 3 long.
        assert_eq!(Vec::<i64>::try_from(&batch.mlm_rows).unwrap(), [1, 5]);
        let packing = batch.packing.as_ref().expect("a padded batch is packed");
        assert_eq!(
            Vec::<i32>::try_from(&packing.cu_seqlens).unwrap(),
            [0, 4, 7]
        );
        // The other way round, the rows shift back by the padding.
        let batch = collate_packed(&[
            example(&[101, 103, 102], &[-100, 66, -100]),
            example(&[101, 103, 7, 102], &[-100, 55, -100, -100]),
        ]);
        assert_eq!(Vec::<i64>::try_from(&batch.mlm_positions).unwrap(), [1, 5]);
        assert_eq!(Vec::<i64>::try_from(&batch.mlm_rows).unwrap(), [1, 4]);
        // No padding, no packing: the rows are the flat positions.
        let full = collate_packed(&[example(&[101, 103, 102], &[-100, 66, -100])]);
        assert!(full.packing.is_none());
        assert!(full.mlm_rows.equal(&full.mlm_positions));
    }
}
