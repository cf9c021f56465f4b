//! Where libtorch lives on this host.
//!
//! Shared by the launcher (which must not link libtorch, so that it can explain a missing
//! torch instead of dying in the dynamic loader) and by `biobert-core`'s doctor.

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The torch release that tch 0.24 is generated for.
pub const TORCH_VERSION: &str = "2.11.0";

/// The library every libtorch install has; its folder is "the torch lib folder".
pub const TORCH_CPU_LIB: &str = "libtorch_cpu.so";

/// How a torch lib folder was found, for the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `BIOBERT_TORCH` named it.
    Env,
    /// A folder on `LD_LIBRARY_PATH` (as `launch/env.sh` sets it).
    LibraryPath,
    /// The folder this binary was built against (its rpath).
    BuildTime,
    /// `python3`'s torch package.
    Python,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Env => "BIOBERT_TORCH",
            Source::LibraryPath => "LD_LIBRARY_PATH",
            Source::BuildTime => "build-time rpath",
            Source::Python => "python3's torch",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchLib {
    pub lib_dir: PathBuf,
    pub source: Source,
    /// `torch.__version__` (e.g. `2.11.0+cu130`), when the install says.
    pub version: Option<String>,
}

/// Why no usable torch was found: a message that ends with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound(pub String);

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The inputs of the search, gathered from the process so that the search itself is pure.
pub struct Probe {
    pub biobert_torch: Option<OsString>,
    pub ld_library_path: Option<OsString>,
    pub build_time: Option<PathBuf>,
    pub python_torch: Option<PathBuf>,
}

impl Probe {
    /// Reads the environment; asks `python3` only when nothing earlier answers.
    pub fn from_process() -> Probe {
        let mut probe = Probe {
            biobert_torch: env::var_os("BIOBERT_TORCH").filter(|v| !v.is_empty()),
            ld_library_path: env::var_os("LD_LIBRARY_PATH"),
            build_time: option_env!("BIOBERT_TORCH_LIB").map(PathBuf::from),
            python_torch: None,
        };
        if probe.biobert_torch.is_none() && locate_without_python(&probe).is_none() {
            probe.python_torch = python_torch_package();
        }
        probe
    }
}

/// Finds the torch lib folder: `BIOBERT_TORCH` (authoritative when set), then
/// `LD_LIBRARY_PATH`, then the build-time folder, then `python3`'s torch.
pub fn locate(probe: &Probe) -> Result<TorchLib, NotFound> {
    if let Some(named) = &probe.biobert_torch {
        let named = PathBuf::from(named);
        return match lib_dir_of(&named) {
            Some(dir) => checked(dir, Source::Env),
            None => Err(NotFound(format!(
                "BIOBERT_TORCH={} holds no lib/{TORCH_CPU_LIB}: set it to a torch {TORCH_VERSION} \
                 package folder (python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')",
                named.display()
            ))),
        };
    }
    if let Some(found) = locate_without_python(probe) {
        return checked(found.0, found.1);
    }
    if let Some(dir) = probe.python_torch.as_deref().and_then(lib_dir_of) {
        return checked(dir, Source::Python);
    }
    Err(NotFound(format!(
        "libtorch not found (looked at BIOBERT_TORCH, LD_LIBRARY_PATH, {}, and python3's torch): \
         run ./launch/setup.sh, or `pip install torch=={TORCH_VERSION}` and `source launch/env.sh`, \
         or set BIOBERT_TORCH to a torch {TORCH_VERSION} package folder",
        probe
            .build_time
            .as_deref()
            .map_or("no build-time folder".to_string(), |p| p.display().to_string())
    )))
}

fn locate_without_python(probe: &Probe) -> Option<(PathBuf, Source)> {
    if let Some(paths) = &probe.ld_library_path {
        if let Some(dir) = env::split_paths(paths).find(|d| d.join(TORCH_CPU_LIB).is_file()) {
            return Some((dir, Source::LibraryPath));
        }
    }
    let build_time = probe.build_time.as_ref()?;
    build_time
        .join(TORCH_CPU_LIB)
        .is_file()
        .then(|| (build_time.clone(), Source::BuildTime))
}

/// Accepts a torch package folder (`.../torch`) or its `lib` folder.
fn lib_dir_of(path: &Path) -> Option<PathBuf> {
    [path.join("lib"), path.to_path_buf()]
        .into_iter()
        .find(|d| d.join(TORCH_CPU_LIB).is_file())
}

fn checked(lib_dir: PathBuf, source: Source) -> Result<TorchLib, NotFound> {
    let version = installed_version(&lib_dir);
    if let Some(v) = &version {
        let release = v.split('+').next().unwrap_or(v);
        if release != TORCH_VERSION {
            return Err(NotFound(format!(
                "torch at {} (found through {source}) is {v}, but biobert is built for torch \
                 {TORCH_VERSION}: `pip install torch=={TORCH_VERSION}` or set BIOBERT_TORCH to \
                 a torch {TORCH_VERSION} package folder",
                lib_dir.display()
            )));
        }
    }
    Ok(TorchLib {
        lib_dir,
        source,
        version,
    })
}

/// The version a wheel (`torch/version.py`) or a libtorch zip (`build-version`) records.
pub fn installed_version(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        return text.lines().find_map(|line| {
            let rest = line.strip_prefix("__version__")?;
            let value = rest.trim_start().strip_prefix('=')?.trim();
            Some(value.trim_matches(|c| c == '\'' || c == '"').to_string())
        });
    }
    let text = std::fs::read_to_string(root.join("build-version")).ok()?;
    Some(text.trim().to_string())
}

/// `python3`'s torch package folder, found without importing torch (which takes seconds).
fn python_torch_package() -> Option<PathBuf> {
    let python = env::var_os("BIOBERT_PYTHON").unwrap_or_else(|| "python3".into());
    let script = "import importlib.util as u\n\
                  s = u.find_spec('torch')\n\
                  print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    let out = Command::new(python).args(["-c", script]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let path = text.trim();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_torch(root: &Path, version: &str) -> PathBuf {
        let pkg = root.join("torch");
        std::fs::create_dir_all(pkg.join("lib")).unwrap();
        std::fs::write(pkg.join("lib").join(TORCH_CPU_LIB), b"").unwrap();
        std::fs::write(
            pkg.join("version.py"),
            format!("__version__ = '{version}'\n"),
        )
        .unwrap();
        pkg
    }

    fn empty_probe() -> Probe {
        Probe {
            biobert_torch: None,
            ld_library_path: None,
            build_time: None,
            python_torch: None,
        }
    }

    #[test]
    fn env_variable_wins_and_accepts_package_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = fake_torch(tmp.path(), "2.11.0+cu130");
        let other = fake_torch(&tmp.path().join("other"), "2.11.0");
        let probe = Probe {
            biobert_torch: Some(pkg.clone().into()),
            build_time: Some(other.join("lib")),
            ..empty_probe()
        };
        let found = locate(&probe).unwrap();
        assert_eq!(found.lib_dir, pkg.join("lib"));
        assert_eq!(found.source, Source::Env);
        assert_eq!(found.version.as_deref(), Some("2.11.0+cu130"));
    }

    #[test]
    fn bad_env_variable_is_an_error_not_a_fallback() {
        let tmp = tempfile::tempdir().unwrap();
        let other = fake_torch(tmp.path(), "2.11.0");
        let probe = Probe {
            biobert_torch: Some(tmp.path().join("nowhere").into()),
            build_time: Some(other.join("lib")),
            ..empty_probe()
        };
        let err = locate(&probe).unwrap_err();
        assert!(err.0.contains("BIOBERT_TORCH="), "{err}");
    }

    #[test]
    fn order_is_library_path_then_build_time_then_python() {
        let tmp = tempfile::tempdir().unwrap();
        let a = fake_torch(&tmp.path().join("a"), "2.11.0");
        let b = fake_torch(&tmp.path().join("b"), "2.11.0");
        let c = fake_torch(&tmp.path().join("c"), "2.11.0");
        let mut probe = Probe {
            ld_library_path: Some(env::join_paths(["/nonexistent".into(), a.join("lib")]).unwrap()),
            build_time: Some(b.join("lib")),
            python_torch: Some(c.clone()),
            ..empty_probe()
        };
        assert_eq!(locate(&probe).unwrap().source, Source::LibraryPath);
        probe.ld_library_path = None;
        assert_eq!(locate(&probe).unwrap().source, Source::BuildTime);
        probe.build_time = Some(tmp.path().join("gone"));
        let found = locate(&probe).unwrap();
        assert_eq!(
            (found.source, found.lib_dir),
            (Source::Python, c.join("lib"))
        );
    }

    #[test]
    fn nothing_found_names_the_fix() {
        let err = locate(&empty_probe()).unwrap_err();
        assert!(err.0.contains("./launch/setup.sh"), "{err}");
        assert!(err.0.contains("BIOBERT_TORCH"), "{err}");
    }

    #[test]
    fn wrong_version_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = fake_torch(tmp.path(), "2.5.1+cu121");
        let probe = Probe {
            biobert_torch: Some(pkg.into()),
            ..empty_probe()
        };
        let err = locate(&probe).unwrap_err();
        assert!(
            err.0.contains("2.5.1+cu121") && err.0.contains(TORCH_VERSION),
            "{err}"
        );
    }
}
