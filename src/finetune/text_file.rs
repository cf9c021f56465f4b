//! A benchmark set's text file, read whole (BioBERT's largest, BC2GM's train.tsv, is 7 MB),
//! with errors that say which of "missing", "unreadable" and "not UTF-8" it is.

use std::path::Path;

use anyhow::{anyhow, Result};

pub fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("{}: not found", path.display()),
        _ => anyhow!("{}: cannot read: {e}", path.display()),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{}: not UTF-8 text (byte {} is not)",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_non_utf8_files_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("test.tsv");
        let err = read(&missing).unwrap_err().to_string();
        assert_eq!(err, format!("{}: not found", missing.display()));
        let latin1 = tmp.path().join("train.tsv");
        std::fs::write(&latin1, b"caf\xe9\tO\n").unwrap();
        let err = read(&latin1).unwrap_err().to_string();
        assert!(err.ends_with("not UTF-8 text (byte 3 is not)"), "{err}");
        std::fs::write(&latin1, "café\tO\n").unwrap();
        assert_eq!(read(&latin1).unwrap(), "café\tO\n");
    }
}
