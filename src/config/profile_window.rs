//! `log.profile`: which pretraining steps the profiler records (see runtime/profiler.rs).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Steps `start..start + count` (counted from 1, as the log counts them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileWindow {
    pub start: u64,
    pub count: u64,
}

impl ProfileWindow {
    /// "START:COUNT", both at least 1; "" is no profile.
    pub fn parse(key: &str, text: &str) -> Result<Option<ProfileWindow>> {
        if text.is_empty() {
            return Ok(None);
        }
        let parsed = text.split_once(':').and_then(|(a, b)| {
            Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
        });
        match parsed {
            Some((start, count)) if start >= 1 && count >= 1 => {
                Ok(Some(ProfileWindow { start, count }))
            }
            _ => bail!("{key} = {text:?}: expected \"START:COUNT\" (the first step to record, from 1, and how many), e.g. \"20:3\", or \"\" for none"),
        }
    }

    pub fn last(&self) -> u64 {
        self.start + self.count - 1
    }

    /// The trace's path in run folder `out`.
    pub fn trace_path(&self, out: &Path, rank: usize) -> PathBuf {
        out.join("profile").join(format!(
            "trace_rank{rank}_steps{}-{}.json",
            self.start,
            self.last()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_or_are_refused_by_name() {
        assert_eq!(ProfileWindow::parse("log.profile", "").unwrap(), None);
        let w = ProfileWindow::parse("log.profile", "20:3")
            .unwrap()
            .unwrap();
        assert_eq!((w.start, w.count, w.last()), (20, 3, 22));
        for bad in ["20", "0:3", "5:0", "a:b", "-1:2"] {
            let err = ProfileWindow::parse("log.profile", bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("log.profile = {bad:?}: expected")),
                "{err}"
            );
        }
    }
}
