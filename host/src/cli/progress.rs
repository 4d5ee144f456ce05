//! Progress on standard error, shown only on a terminal.

use std::io::IsTerminal;

use crate::gc::Progress;

/// A progress bar on standard error, shown only on a terminal: objects
/// done (of how many, when known), their rate, and bytes done.
pub struct Bar {
    bar: indicatif::ProgressBar,
    stage: std::sync::Mutex<String>,
    bytes: std::sync::atomic::AtomicU64,
}

impl Bar {
    pub fn new() -> Bar {
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(0)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>36} [{bar:30}] {pos}/{len} objects ({per_sec}, {elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bar { bar, stage: Default::default(), bytes: Default::default() }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn stage(&self, name: &str, items: Option<u64>) {
        self.bar.reset();
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = name.to_string();
        self.bytes.store(0, std::sync::atomic::Ordering::Relaxed);
        self.bar.set_message(name.to_string());
        match items {
            Some(n) => self.bar.set_length(n),
            None => self.bar.unset_length(),
        }
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn wants_totals(&self) -> bool {
        !self.bar.is_hidden()
    }

    fn bytes(&self, n: u64) {
        let total = self.bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        let stage = self.stage.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.bar.set_message(format!("{stage} {}", indicatif::HumanBytes(total)));
    }
}
