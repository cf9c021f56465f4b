//! Progress for long work: a bar on a terminal, a line every 30 seconds in a log.
//! Rates are computed from shared counters that the workers bump.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Default)]
pub struct Counters {
    pub bytes: Arc<AtomicU64>,
    pub documents: AtomicU64,
    pub tokens: AtomicU64,
    /// Sentences dropped for being longer than `extract::MAX_SENTENCE_TOKENS`.
    pub long_sentences: AtomicU64,
}

pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub counters: Arc<Counters>,
    started: Instant,
}

impl Progress {
    /// `total_bytes`: the input size the bar fills up to (0 for an unknown total).
    pub fn start(label: &str, total_bytes: u64, counters: Arc<Counters>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let label = label.to_string();
        let thread = {
            let (stop, counters) = (stop.clone(), counters.clone());
            std::thread::spawn(move || draw(&label, total_bytes, &counters, &stop))
        };
        Progress {
            stop,
            thread: Some(thread),
            counters,
            started: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(mut self) -> Duration {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.started.elapsed()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rates(counters: &Counters, seconds: f64) -> String {
    let s = seconds.max(1e-3);
    let docs = counters.documents.load(Ordering::Relaxed);
    let tokens = counters.tokens.load(Ordering::Relaxed);
    let mb = counters.bytes.load(Ordering::Relaxed) as f64 / 1e6;
    let mut line = format!(
        "{docs} docs ({:.0} docs/s), {:.1} MB/s",
        docs as f64 / s,
        mb / s
    );
    if tokens > 0 {
        line.push_str(&format!(
            ", {:.2}M tokens ({:.0} tokens/s)",
            tokens as f64 / 1e6,
            tokens as f64 / s
        ));
    }
    line
}

fn draw(label: &str, total: u64, counters: &Counters, stop: &AtomicBool) {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(total.max(1));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar
    });
    let mut last_line = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let seconds = started.elapsed().as_secs_f64();
        match &bar {
            Some(bar) => {
                bar.set_position(counters.bytes.load(Ordering::Relaxed).min(total));
                bar.set_message(rates(counters, seconds));
            }
            None if last_line.elapsed() >= Duration::from_secs(30) => {
                eprintln!("{label}: {:.0}s, {}", seconds, rates(counters, seconds));
                last_line = Instant::now();
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
