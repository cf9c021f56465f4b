//! The fine-tuning loop shared by NER and RE: epochs over a keyed shuffle of the training
//! inputs, each global batch split among the ranks (gradients summed by the pretraining
//! all-reduce), AdamW over the flat parameter buffers, and predictions for evaluation.

use anyhow::{bail, Result};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::config::finetune_config::FinetuneConfig;
use crate::config::run_config::DistributedConfig;
use crate::data::rng::{Rng, Stream};
use crate::finetune::classifier::{Classifier, Head};
use crate::finetune::ner_data::IGNORED;
use crate::model::packing::Packing;
use crate::parallel::distributed::Distributed;
use crate::parallel::gradient_all_reduce::GradientAllReduce;
use crate::runtime::{fault_injection, stop_signal};
use crate::train::flat_parameters::FlatParameters;
use crate::train::optimizer::Optimizer;
use crate::train::step_readback::{InFlight, StepReadback};

/// Batches per length-sorted group (transformers' LengthGroupedSampler uses 50).
const MEGA_BATCH: usize = 50;

/// How an epoch ended.
pub enum EpochEnd {
    /// Its mean training loss over the steps run here.
    Done { mean_loss: f64 },
    /// A stop signal, after this many of its steps.
    Stopped { steps: u64 },
}

/// A batch on the device (see `collate`).
struct Collated {
    ids: Tensor,
    /// The segments, when any input has a second one.
    segments: Option<Tensor>,
    /// 1 at real positions, 0 at padding; None without padding.
    mask: Option<Tensor>,
    targets: Tensor,
    packing: Option<Packing>,
}

impl Collated {
    fn logits(&self, model: &Classifier, train: bool) -> Tensor {
        model.logits(
            &self.ids,
            self.segments.as_ref(),
            self.mask.as_ref(),
            self.packing.as_ref(),
            train,
        )
    }
}

/// One model input and its targets: a label per position (tokens; `IGNORED` where none),
/// one label (sequences), or the answer's first and last positions (spans).
#[derive(Debug, Clone)]
pub struct Input {
    pub input_ids: Vec<i64>,
    /// BERT's segment of each position (empty: all 0, one segment).
    pub token_type_ids: Vec<i64>,
    pub targets: Vec<i64>,
}

pub struct Trainer<'a> {
    pub model: Classifier,
    pub vs: VarStore,
    optimizer: Optimizer,
    reducer: GradientAllReduce,
    dist: &'a Distributed,
    pub device: Device,
    config: FinetuneConfig,
    pad: i64,
    pub steps_per_epoch: u64,
    pub step: u64,
    /// Each step's loss and norm, read one step late.
    readback: StepReadback,
}

impl<'a> Trainer<'a> {
    pub fn new(
        model: Classifier,
        vs: VarStore,
        dist: &'a Distributed,
        device: Device,
        config: &FinetuneConfig,
        train_size: usize,
        pad: i64,
    ) -> Result<Trainer<'a>> {
        if config.batch_size < dist.size {
            bail!(
                "batch_size = {} is smaller than the {} ranks: each rank needs at least one sequence a step",
                config.batch_size,
                dist.size
            );
        }
        let steps_per_epoch = train_size.div_ceil(config.batch_size) as u64;
        let flat = FlatParameters::new(vs.variables().into_iter().collect(), device);
        let optimizer = Optimizer::new(flat, &config.optimizer());
        let reducer = GradientAllReduce::new(dist, &DistributedConfig::default(), device)?;
        Ok(Trainer {
            model,
            vs,
            optimizer,
            reducer,
            dist,
            device,
            config: config.clone(),
            pad,
            steps_per_epoch,
            step: 0,
            readback: StepReadback::new(device)?,
        })
    }

    /// One epoch from its step `skip` on (a resumed mid-epoch stop); ends early, after the
    /// same step on every rank, when a stop signal reached any of them.
    ///
    /// The host never waits for the device inside a step: a side thread collates the next
    /// batches (into pinned memory on a GPU, copied without blocking), the clipped update
    /// is queued on the device (a non-finite loss or norm skips it there), and each step's
    /// loss and norm are read once the next step is queued. `progress` hears of each step
    /// as it is read, and a non-finite one ends the run with its own step number.
    pub fn epoch(
        &mut self,
        inputs: &[Input],
        epoch: u64,
        skip: u64,
        mut progress: impl FnMut(u64, f64),
    ) -> Result<EpochEnd> {
        let order = epoch_order(inputs, &self.config, epoch);
        // This rank's share of each global batch: every world-th sequence. Indices only:
        // 8 bytes a training input (BioBERT's largest set, ChemProt: ~20k, 160 kB).
        let shares: Vec<Vec<usize>> = order
            .chunks(self.config.batch_size)
            .map(|b| {
                b.iter()
                    .copied()
                    .skip(self.dist.rank)
                    .step_by(self.dist.size)
                    .collect()
            })
            .collect();
        let spec = self.collate_spec();
        let pin = self.device.is_cuda();
        std::thread::scope(|scope| {
            let (batches, next) = std::sync::mpsc::sync_channel::<Result<StepBatch>>(2);
            let shares = &shares[(skip as usize).min(shares.len())..];
            scope.spawn(move || {
                for share in shares {
                    let mine: Vec<&Input> = share.iter().map(|&i| &inputs[i]).collect();
                    let batch = StepBatch::collate(spec, &mine, pin);
                    if batches.send(batch).is_err() {
                        return;
                    }
                }
            });
            self.run_steps(next, epoch, skip, &mut progress)
        })
    }

    /// The steps of one epoch from `skip` on, each batch from `next` (see `epoch`).
    fn run_steps(
        &mut self,
        next: std::sync::mpsc::Receiver<Result<StepBatch>>,
        epoch: u64,
        skip: u64,
        progress: &mut impl FnMut(u64, f64),
    ) -> Result<EpochEnd> {
        let schedule = self
            .config
            .schedule(self.steps_per_epoch * self.config.epochs);
        let mut sums = LossSums::default();
        let mut unread: std::collections::VecDeque<QueuedStep> = Default::default();
        for (s, batch) in (skip..).zip(next.iter()) {
            let queued = self.queue_step(batch?, epoch, s, schedule.learning_rate(self.step))?;
            self.step += 1;
            unread.push_back(queued);
            if unread.len() > 1 {
                let oldest = unread.pop_front().expect("two queued");
                self.read(oldest, &mut sums, progress)?;
            }
            fault_injection::stop_at_finetune_step(self.step);
            // After an epoch's last step the epoch's own checkpoint comes first (`fit`).
            let last = s + 1 == self.steps_per_epoch;
            if !last && self.stop_requested() {
                for queued in unread.drain(..) {
                    self.read(queued, &mut sums, progress)?;
                }
                return Ok(EpochEnd::Stopped { steps: s + 1 });
            }
        }
        for queued in unread.drain(..) {
            self.read(queued, &mut sums, progress)?;
        }
        Ok(EpochEnd::Done {
            mean_loss: sums.total / sums.steps.max(1) as f64,
        })
    }

    /// A queued step's loss and gradient norm, read from the host (waiting for that step
    /// alone); a non-finite one ends the run, naming the step.
    fn read(
        &self,
        queued: QueuedStep,
        sums: &mut LossSums,
        progress: &mut impl FnMut(u64, f64),
    ) -> Result<()> {
        let values = self.readback.finish(queued.values)?;
        // The read waited for the device, so the gradient sums are done or have failed.
        self.reducer.check()?;
        let mut loss_sum = [values[0]];
        self.dist.all_reduce_f64(&mut loss_sum);
        let (loss, norm) = (loss_sum[0] / queued.labelled.max(1.0), values[1]);
        if !loss.is_finite() || !norm.is_finite() {
            bail!(
                "epoch {}, step {}: the loss is {loss} (gradient norm {norm})",
                queued.epoch + 1,
                queued.step_in_epoch + 1
            );
        }
        sums.total += loss;
        sums.steps += 1;
        progress(queued.step, loss);
        Ok(())
    }

    /// Whether any rank was signalled (every rank asks after every step).
    pub fn stop_requested(&self) -> bool {
        let mut flag = [f64::from(u8::from(stop_signal::requested()))];
        self.dist.all_reduce_f64(&mut flag);
        flag[0] > 0.0
    }

    /// Forward and backward of this rank's share, the gradient all-reduce and the clipped
    /// update, queued on the device, and the copy of its loss sum and gradient norm to the
    /// host started. The loss is normalised by the global count (labelled tokens, or
    /// sequences), so the summed gradients are the mean's. A rank whose loss is not finite
    /// makes the gradient not finite too (one element, before the all-reduce), so that every
    /// rank's device skips the update.
    fn queue_step(
        &mut self,
        batch: StepBatch,
        epoch: u64,
        step: u64,
        lr: f64,
    ) -> Result<QueuedStep> {
        let mut counts = [batch.labelled as f64];
        self.dist.all_reduce_f64(&mut counts);
        let mut loss_sum = Tensor::zeros([1], (Kind::Double, self.device));
        if let Some(host) = batch.host {
            let seed = Rng::for_keys(&[
                self.config.seed,
                Stream::FinetuneDropout.key(),
                epoch,
                step,
                self.dist.rank as u64,
            ])
            .next_u64();
            tch::manual_seed((seed & i64::MAX as u64) as i64);
            let batch = host.into_device(self.device)?;
            let logits = batch.logits(&self.model, true);
            let sum = match self.model.head {
                Head::Span => span_loss_sum(&logits, &batch.targets, batch.mask.as_ref()),
                _ => cross_entropy_sum(&logits, &batch.targets),
            };
            (&sum / counts[0].max(1.0)).backward();
            loss_sum = sum.detach().to_kind(Kind::Double).view([1]);
        }
        tch::no_grad(|| {
            // 0 * a finite sum adds exactly 0; 0 * inf or NaN adds NaN.
            let poison = (&loss_sum * 0.0).to_kind(Kind::Float);
            let _ = self.optimizer.flat.grad.narrow(0, 0, 1).g_add_(&poison);
        });
        self.reducer
            .all_reduce(self.dist, &self.optimizer.flat.grad)?;
        let norm = self.optimizer.grad_norm();
        self.optimizer
            .clip_and_step(&norm, self.config.max_grad_norm, lr)?;
        self.optimizer.zero_grad();
        let values = Tensor::cat(&[loss_sum, norm.to_kind(Kind::Double).view([1])], 0);
        Ok(QueuedStep {
            epoch,
            step_in_epoch: step,
            step: self.step + 1,
            labelled: counts[0],
            values: self.readback.start(&values)?,
        })
    }

    fn collate_spec(&self) -> CollateSpec {
        CollateSpec {
            pad: self.pad,
            head: self.model.head,
            unpad: self.config.unpad,
        }
    }

    /// A chunk of inputs on the device, for evaluation.
    fn collate(&self, inputs: &[&Input]) -> Result<Collated> {
        collate_host(self.collate_spec(), inputs, false)?.into_device(self.device)
    }
}

/// What collating needs from the trainer, so that a side thread can do it.
#[derive(Clone, Copy)]
struct CollateSpec {
    pad: i64,
    head: Head,
    unpad: bool,
}

/// One step's batch of this rank, collated on the host; `host` is None for a rank with no
/// sequence in a small last batch.
struct StepBatch {
    labelled: usize,
    host: Option<Collated>,
}

impl StepBatch {
    fn collate(spec: CollateSpec, mine: &[&Input], pin: bool) -> Result<StepBatch> {
        Ok(StepBatch {
            labelled: mine.iter().map(|i| labelled(i)).sum(),
            host: match mine.is_empty() {
                true => None,
                false => Some(collate_host(spec, mine, pin)?),
            },
        })
    }
}

/// A step queued on the device, whose loss and norm are on their way to the host.
struct QueuedStep {
    epoch: u64,
    step_in_epoch: u64,
    /// The optimizer step it made (from 1, across epochs).
    step: u64,
    /// Labelled tokens (or sequences) of the global batch: the loss's divisor.
    labelled: f64,
    values: InFlight,
}

#[derive(Default)]
struct LossSums {
    total: f64,
    steps: u64,
}

impl Collated {
    /// On `device`; from pinned memory the copies do not block the host.
    fn into_device(self, device: Device) -> Result<Collated> {
        if device == Device::Cpu {
            return Ok(self);
        }
        let to =
            |t: &Tensor| -> Result<Tensor> { Ok(t.f_to_device_(device, t.kind(), true, false)?) };
        Ok(Collated {
            ids: to(&self.ids)?,
            segments: self.segments.as_ref().map(to).transpose()?,
            mask: self.mask.as_ref().map(to).transpose()?,
            targets: to(&self.targets)?,
            packing: self.packing.as_ref().map(|p| p.try_map(to)).transpose()?,
        })
    }
}

/// The padded batch on the host: ids, segments, the attention mask (None when unpadded),
/// the targets (per position with padding IGNORED, per sequence, or each sequence's start
/// and end), and with `unpad` the packing of a padded batch's real tokens; in pinned
/// memory when `pin` (for a GPU).
fn collate_host(spec: CollateSpec, inputs: &[&Input], pin: bool) -> Result<Collated> {
    let width = inputs.iter().map(|i| i.input_ids.len()).max().unwrap_or(1);
    let b = inputs.len();
    let (mut ids, mut mask) = (vec![spec.pad; b * width], vec![0i64; b * width]);
    let mut segments = vec![0i64; b * width];
    let tokens = spec.head == Head::Token;
    let mut targets = match spec.head {
        Head::Token => vec![IGNORED; b * width],
        Head::Sequence => vec![0; b],
        Head::Span => Vec::with_capacity(2 * b),
    };
    for (r, input) in inputs.iter().enumerate() {
        for (j, &id) in input.input_ids.iter().enumerate() {
            ids[r * width + j] = id;
            mask[r * width + j] = 1;
            if tokens {
                targets[r * width + j] = input.targets[j];
            }
        }
        segments[r * width..r * width + input.token_type_ids.len()]
            .copy_from_slice(&input.token_type_ids);
        match spec.head {
            Head::Sequence => targets[r] = input.targets[0],
            Head::Span => targets.extend_from_slice(&input.targets[..2]),
            Head::Token => {}
        }
    }
    let two_segments = inputs.iter().any(|i| !i.token_type_ids.is_empty());
    let padded = inputs.iter().any(|i| i.input_ids.len() < width);
    let shape = [b as i64, width as i64];
    let host = |t: Tensor| -> Result<Tensor> {
        match pin {
            true => crate::runtime::pinned_memory::pin(&t),
            false => Ok(t),
        }
    };
    let to = |v: &[i64]| host(Tensor::from_slice(v));
    let packing = match padded && spec.unpad {
        true => {
            let lengths: Vec<usize> = inputs.iter().map(|i| i.input_ids.len()).collect();
            Some(Packing::from_lengths(&lengths, width).try_map(|t| host(t.shallow_clone()))?)
        }
        false => None,
    };
    Ok(Collated {
        ids: to(&ids)?.view(shape),
        segments: two_segments
            .then(|| to(&segments))
            .transpose()?
            .map(|t| t.view(shape)),
        mask: padded
            .then(|| to(&mask))
            .transpose()?
            .map(|t| t.view(shape)),
        targets: to(&targets)?,
        packing,
    })
}

impl Trainer<'_> {
    /// The logits of a chunk of inputs, padded to its longest: [inputs, width, labels]
    /// (tokens) or [inputs, labels] (sequences), on the device.
    fn chunk_logits(&self, chunk: &[Input]) -> Result<Tensor> {
        let refs: Vec<&Input> = chunk.iter().collect();
        let batch = self.collate(&refs)?;
        Ok(tch::no_grad(|| batch.logits(&self.model, false)))
    }

    /// Predicted labels: per position (tokens) or one (sequences), for every input.
    pub fn predict(&self, inputs: &[Input]) -> Result<Vec<Vec<usize>>> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(self.config.eval_batch_size) {
            let argmax = self.chunk_logits(chunk)?.argmax(-1, false);
            let flat = Vec::<i64>::try_from(argmax.to_device(Device::Cpu).view([-1]))?;
            let width = flat.len() / chunk.len();
            for (r, input) in chunk.iter().enumerate() {
                let row = &flat[r * width..(r + 1) * width];
                out.push(match self.model.head {
                    Head::Token | Head::Span => row[..input.input_ids.len()]
                        .iter()
                        .map(|&p| p as usize)
                        .collect(),
                    Head::Sequence => vec![row[0] as usize],
                });
            }
        }
        Ok(out)
    }

    /// Question answering: each input's (start, end) logits at its positions, in fp32 on
    /// the host, a chunk of `eval_batch_size` inputs at a time.
    pub fn span_logits(&self, inputs: &[Input]) -> Result<Vec<Vec<[f32; 2]>>> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(self.config.eval_batch_size) {
            let logits = self
                .chunk_logits(chunk)?
                .to_kind(Kind::Float)
                .to_device(Device::Cpu);
            let width = logits.size()[1] as usize;
            let flat = Vec::<f32>::try_from(logits.view([-1]))?;
            for (r, input) in chunk.iter().enumerate() {
                let row = &flat[r * width * 2..(r * width + input.input_ids.len()) * 2];
                out.push(row.chunks(2).map(|p| [p[0], p[1]]).collect());
            }
        }
        Ok(out)
    }

    /// Every input's logits in fp32 on the host, with the input ids and attention mask that
    /// produced them, all padded to the longest input (padding positions hold zeros):
    /// what `--save-logits` writes. Held whole: inputs x longest x labels x 4 bytes, e.g.
    /// BC2GM's 5,000 test sentences x 192 pieces x 3 labels = 11.5 MB, or ChemProt's
    /// 16,000 test sentences x 13 labels = 0.8 MB (plus 8 bytes per piece for the ids and
    /// the mask: 15 MB for BC2GM).
    pub fn logits(&self, inputs: &[Input]) -> Result<Vec<(&'static str, Tensor)>> {
        let width = inputs.iter().map(|i| i.input_ids.len()).max().unwrap_or(1);
        let (mut ids, mut mask) = (
            vec![self.pad; inputs.len() * width],
            vec![0i64; inputs.len() * width],
        );
        let mut segments = vec![0i64; inputs.len() * width];
        for (r, input) in inputs.iter().enumerate() {
            ids[r * width..r * width + input.input_ids.len()].copy_from_slice(&input.input_ids);
            mask[r * width..r * width + input.input_ids.len()].fill(1);
            segments[r * width..r * width + input.token_type_ids.len()]
                .copy_from_slice(&input.token_type_ids);
        }
        let shape = [inputs.len() as i64, width as i64];
        let mut all: Option<Tensor> = None;
        let mut start = 0i64;
        for chunk in inputs.chunks(self.config.eval_batch_size) {
            let logits = self
                .chunk_logits(chunk)?
                .to_kind(Kind::Float)
                .to_device(Device::Cpu);
            let labels = *logits.size().last().expect("logits have a label dimension");
            let out = all.get_or_insert_with(|| match self.model.head {
                Head::Token | Head::Span => {
                    Tensor::zeros([shape[0], shape[1], labels], (Kind::Float, Device::Cpu))
                }
                Head::Sequence => Tensor::zeros([shape[0], labels], (Kind::Float, Device::Cpu)),
            });
            let mut rows = out.narrow(0, start, chunk.len() as i64);
            match self.model.head {
                Head::Token | Head::Span => rows.narrow(1, 0, logits.size()[1]).copy_(&logits),
                Head::Sequence => rows.copy_(&logits),
            }
            start += chunk.len() as i64;
        }
        let Some(logits) = all else {
            bail!("no inputs to compute logits for");
        };
        Ok(vec![
            ("input_ids", Tensor::from_slice(&ids).view(shape)),
            ("attention_mask", Tensor::from_slice(&mask).view(shape)),
            ("token_type_ids", Tensor::from_slice(&segments).view(shape)),
            ("logits", logits),
        ])
    }

    /// A copy of every parameter, by name (for keeping the best epoch, and checkpoints).
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        let flat = &self.optimizer.flat;
        flat.names
            .iter()
            .zip(&flat.params)
            .map(|(n, p)| (n.clone(), p.detach().to_device(Device::Cpu).copy()))
            .collect()
    }

    /// Sets every parameter from a snapshot or a checkpoint; a missing or misshapen one is
    /// an error.
    pub fn restore(&mut self, saved: &[(String, Tensor)]) -> Result<()> {
        let map: std::collections::BTreeMap<&str, &Tensor> =
            saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let flat = &self.optimizer.flat;
        tch::no_grad(|| -> Result<()> {
            for (name, p) in flat.names.iter().zip(&flat.params) {
                let Some(t) = map.get(name.as_str()) else {
                    bail!("the saved parameters lack {name}");
                };
                if t.size() != p.size() {
                    bail!(
                        "saved {name} has shape {:?}, expected {:?}",
                        t.size(),
                        p.size()
                    );
                }
                p.shallow_clone().copy_(&t.to_device(p.device()));
            }
            Ok(())
        })
    }

    pub fn optimizer_state(&self) -> Vec<(String, Tensor)> {
        self.optimizer.state()
    }

    /// The optimizer's moments and step count of a checkpoint.
    pub fn load_optimizer_state(
        &mut self,
        tensors: Vec<(String, Tensor)>,
        step: u64,
    ) -> Result<()> {
        self.optimizer.load_state(tensors, step)?;
        self.step = step;
        Ok(())
    }
}

/// The epoch's order: a keyed shuffle; with `group_by_length`, sorted by length inside
/// mega-batches of 50 batches and the batches shuffled again (transformers'
/// `LengthGroupedSampler` idea), so that a batch pads little.
pub fn epoch_order(inputs: &[Input], config: &FinetuneConfig, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    Rng::for_keys(&[config.seed, Stream::FinetuneOrder.key(), epoch]).shuffle(&mut order);
    if !config.group_by_length {
        return order;
    }
    let b = config.batch_size;
    for mega in order.chunks_mut(b * MEGA_BATCH) {
        mega.sort_by_key(|&i| std::cmp::Reverse(inputs[i].input_ids.len()));
    }
    let mut batches: Vec<&[usize]> = order.chunks(b).collect();
    Rng::for_keys(&[config.seed, Stream::FinetuneBatches.key(), epoch]).shuffle(&mut batches);
    batches.concat()
}

fn labelled(input: &Input) -> usize {
    input.targets.iter().filter(|&&t| t != IGNORED).count()
}

/// Question answering's loss, summed over the batch: the cross-entropy of the start
/// position plus that of the end position, each a softmax over the sequence's real
/// positions (`targets`: start, end of each sequence). Normalised by two per sequence, it
/// is Google's (start loss + end loss) / 2.
fn span_loss_sum(logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let (b, w) = (logits.size()[0], logits.size()[1]);
    let logits = logits.to_kind(Kind::Float);
    let logits = match mask {
        Some(m) => logits.masked_fill(&m.eq(0).unsqueeze(-1), -1e4),
        None => logits,
    };
    logits
        .permute([0, 2, 1])
        .reshape([2 * b, w])
        .cross_entropy_loss::<Tensor>(targets, None, tch::Reduction::Sum, IGNORED, 0.0)
}

/// Summed cross-entropy over the labelled positions (fp32).
fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Tensor {
    let classes = *logits.size().last().expect("logits have a class dimension");
    logits
        .view([-1, classes])
        .to_kind(Kind::Float)
        .cross_entropy_loss::<Tensor>(&targets.view([-1]), None, tch::Reduction::Sum, IGNORED, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(group: bool) -> FinetuneConfig {
        let mut c =
            FinetuneConfig::from_text(include_str!("../../configs/finetune_ner.toml"), "ner", &[])
                .unwrap();
        c.group_by_length = group;
        c.batch_size = 8;
        c
    }

    /// Grouping by length keeps a permutation, repeats per (seed, epoch), differs across
    /// epochs, and pads less.
    #[test]
    fn length_grouped_order_is_a_keyed_permutation_that_pads_less() {
        let mut rng = Rng::for_keys(&[4]);
        let inputs: Vec<Input> = (0..1000)
            .map(|_| Input {
                token_type_ids: Vec::new(),
                input_ids: vec![1; rng.randint(3, 190) as usize],
                targets: vec![0],
            })
            .collect();
        let padding = |order: &[usize]| -> usize {
            order
                .chunks(8)
                .map(|b| {
                    let lens: Vec<usize> = b.iter().map(|&i| inputs[i].input_ids.len()).collect();
                    let max = lens.iter().max().unwrap();
                    lens.iter().map(|l| max - l).sum::<usize>()
                })
                .sum()
        };
        for group in [false, true] {
            let a = epoch_order(&inputs, &config(group), 0);
            let mut sorted = a.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
            assert_eq!(a, epoch_order(&inputs, &config(group), 0));
            assert_ne!(a, epoch_order(&inputs, &config(group), 1));
        }
        let (plain, grouped) = (
            padding(&epoch_order(&inputs, &config(false), 0)),
            padding(&epoch_order(&inputs, &config(true), 0)),
        );
        assert!(grouped * 5 < plain, "padding {grouped} vs {plain}");
    }
}
