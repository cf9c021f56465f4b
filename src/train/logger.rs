//! What a pretraining run reports: each step's metrics, summed over the logging interval
//! into a console line, TensorBoard scalars and `log.jsonl`; the evaluation lines; the
//! model FLOPs utilisation against the accelerator's peak.

use std::path::Path;
use std::time::Instant;

use tch::Device;
use tensorboard_rs::summary_writer::SummaryWriter;

use crate::config::run_config::RunConfig;
use crate::model::flops;

/// One step's (or one evaluation's) global metrics: losses are means, the rest counts.
#[derive(Debug, Default, Clone)]
pub struct StepMetrics {
    pub loss: f64,
    pub mlm_loss: f64,
    pub nsp_loss: f64,
    pub mlm_correct: f64,
    pub mlm_count: f64,
    pub nsp_correct: f64,
    pub sequences: f64,
    pub tokens: f64,
}

/// The metrics of loss sums [mlm, nsp, mlm correct, nsp correct, tokens] over `masked`
/// positions and `sequences`.
pub fn metrics(sums: &[f64; 5], masked: f64, sequences: f64) -> StepMetrics {
    let (mlm_loss, nsp_loss) = (sums[0] / masked.max(1.0), sums[1] / sequences.max(1.0));
    StepMetrics {
        loss: mlm_loss + nsp_loss,
        mlm_loss,
        nsp_loss,
        mlm_correct: sums[2],
        mlm_count: masked,
        nsp_correct: sums[3],
        sequences,
        tokens: sums[4],
    }
}

/// The console line every K steps and the TensorBoard scalars (averages over the K steps).
pub struct Logger {
    writer: SummaryWriter,
    /// `log.jsonl`: the logged values at full precision, one line per logged step.
    jsonl: std::fs::File,
    sum: StepMetrics,
    lr: f64,
    grad_norm: f64,
    steps: u64,
    since: Instant,
    started: Instant,
    start_step: u64,
    max_steps: u64,
    flops_per_token: f64,
    peak_tflops: Option<f64>,
}

impl Logger {
    pub fn new(
        out: &Path,
        max_steps: u64,
        start_step: u64,
        flops_per_token: f64,
        peak_tflops: Option<f64>,
    ) -> anyhow::Result<Logger> {
        let path = out.join("log.jsonl");
        let jsonl = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: cannot open for appending: {e}", path.display()))?;
        Ok(Logger {
            writer: SummaryWriter::new(out.join("tensorboard")),
            jsonl,
            sum: StepMetrics::default(),
            lr: 0.0,
            grad_norm: 0.0,
            steps: 0,
            since: Instant::now(),
            started: Instant::now(),
            start_step,
            max_steps,
            flops_per_token,
            peak_tflops,
        })
    }

    pub fn record(&mut self, m: &StepMetrics, lr: f64, grad_norm: f64) {
        let s = &mut self.sum;
        s.loss += m.loss;
        s.mlm_loss += m.mlm_loss;
        s.nsp_loss += m.nsp_loss;
        s.mlm_correct += m.mlm_correct;
        s.mlm_count += m.mlm_count;
        s.nsp_correct += m.nsp_correct;
        s.sequences += m.sequences;
        s.tokens += m.tokens;
        self.lr = lr;
        self.grad_norm = grad_norm;
        self.steps += 1;
    }

    pub fn flush(&mut self, step: u64) {
        if self.steps == 0 {
            return;
        }
        let n = self.steps as f64;
        let s = self.sum.clone();
        let seconds = self.since.elapsed().as_secs_f64().max(1e-9);
        let seq_per_s = s.sequences / seconds;
        let tokens_per_s = s.tokens / seconds;
        let tflops = tokens_per_s * self.flops_per_token / 1e12;
        let mut scalars = vec![
            ("train/loss", s.loss / n),
            ("train/mlm_loss", s.mlm_loss / n),
            ("train/nsp_loss", s.nsp_loss / n),
            ("train/mlm_accuracy", s.mlm_correct / s.mlm_count.max(1.0)),
            ("train/nsp_accuracy", s.nsp_correct / s.sequences.max(1.0)),
            ("train/lr", self.lr),
            ("train/grad_norm", self.grad_norm),
            ("perf/seq_per_s", seq_per_s),
            ("perf/tokens_per_s", tokens_per_s),
            ("perf/tflops", tflops),
        ];
        if let Some(peak) = self.peak_tflops {
            scalars.push(("perf/mfu", tflops / peak));
        }
        for &(tag, value) in &scalars {
            self.writer.add_scalar(tag, value as f32, step as usize);
        }
        self.writer.flush();
        self.write_jsonl(step, &scalars);
        let done = (step - self.start_step) as f64;
        let eta =
            self.started.elapsed().as_secs_f64() / done.max(1.0) * (self.max_steps - step) as f64;
        let mfu = self
            .peak_tflops
            .map(|peak| format!(" | MFU {:.1}%", 100.0 * tflops / peak))
            .unwrap_or_default();
        println!(
            "step {step}/{} loss {:.4} (mlm {:.4}, nsp {:.4}) mlm_acc {:.4} lr {:.3e} grad_norm {:.3} | {:.1} seq/s{mfu} | ETA {}",
            self.max_steps,
            s.loss / n,
            s.mlm_loss / n,
            s.nsp_loss / n,
            s.mlm_correct / s.mlm_count.max(1.0),
            self.lr,
            self.grad_norm,
            seq_per_s,
            format_duration(eta)
        );
        self.sum = StepMetrics::default();
        self.steps = 0;
        self.since = Instant::now();
    }

    pub fn eval(&mut self, step: u64, m: &Option<StepMetrics>) {
        let Some(m) = m else { return };
        let scalars = [
            ("eval/loss", m.loss),
            ("eval/mlm_loss", m.mlm_loss),
            ("eval/nsp_loss", m.nsp_loss),
            ("eval/mlm_accuracy", m.mlm_correct / m.mlm_count.max(1.0)),
            ("eval/nsp_accuracy", m.nsp_correct / m.sequences.max(1.0)),
        ];
        for (tag, value) in scalars {
            self.writer.add_scalar(tag, value as f32, step as usize);
        }
        self.writer.flush();
        println!(
            "eval step {step}: loss {:.4} mlm_acc {:.4} nsp_acc {:.4}",
            m.loss, scalars[3].1, scalars[4].1
        );
    }
}

impl Logger {
    fn write_jsonl(&mut self, step: u64, scalars: &[(&str, f64)]) {
        use std::io::Write;
        let mut line = serde_json::Map::new();
        line.insert("step".into(), step.into());
        for (tag, value) in scalars {
            line.insert((*tag).into(), serde_json::json!(value));
        }
        let _ = writeln!(self.jsonl, "{}", serde_json::Value::Object(line));
    }
}

/// The dense peak for perf/mfu: log.peak_tflops, or the GPU's data-sheet figure.
pub fn peak_tflops(c: &RunConfig, device: Device, bf16: bool) -> Option<f64> {
    if c.log.peak_tflops > 0.0 {
        return Some(c.log.peak_tflops);
    }
    let Device::Cuda(i) = device else { return None };
    let devices = crate::runtime::cuda_driver::CudaDriver::open()
        .ok()?
        .devices()
        .ok()?;
    flops::peak_tflops(&devices.get(i)?.name, bf16)
}

/// h:mm:ss.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}
