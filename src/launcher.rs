//! `biobert`: the command users run.
//!
//! `biobert-core` links libtorch and the MPI library, so on a host where either is missing
//! it would die in the dynamic loader before printing a word. This launcher links neither:
//! it finds torch (see `torch_location`), checks that the MPI library loads, then execs
//! `biobert-core` beside it with the loader pointed at torch. The exec keeps the process id,
//! so `mpirun -np N biobert ...` sees the ranks it started.

#[path = "runtime/torch_location.rs"]
mod torch_location;

use std::env;
use std::ffi::{CString, OsString};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{exit, Command};

/// The MPI ABI `biobert-core` is linked against (Open MPI 4.x and 5.x).
const MPI_LIBRARY: &str = "libmpi.so.40";

fn main() {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let core = match core_binary() {
        Ok(path) => path,
        Err(message) => fail(&message),
    };
    let torch = match torch_location::locate(&torch_location::Probe::from_process()) {
        Ok(torch) => torch,
        Err(not_found) => fail(&not_found.0),
    };
    if let Err(message) = check_mpi_library() {
        fail(&message);
    }
    let error = Command::new(&core)
        .args(&args)
        .env("LD_LIBRARY_PATH", library_path_with(&torch.lib_dir))
        .env("BIOBERT_TORCH_LIB", &torch.lib_dir)
        .env("BIOBERT_TORCH_SOURCE", torch.source.to_string())
        .exec();
    fail(&format!("cannot run {}: {error}", core.display()));
}

/// Prints the cause and, when the user asked the doctor, that the check failed.
fn fail(message: &str) -> ! {
    let doctor = env::args().nth(1).as_deref() == Some("doctor");
    if doctor {
        println!("biobert {}", env!("CARGO_PKG_VERSION"));
        println!("torch        NOT USABLE");
    }
    eprintln!("error: {message}");
    exit(if doctor { 1 } else { 2 });
}

fn core_binary() -> Result<PathBuf, String> {
    let exe = env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    let core = exe.with_file_name("biobert-core");
    if core.is_file() {
        Ok(core)
    } else {
        Err(format!(
            "{} not found: biobert-core must sit beside {} (copy both binaries)",
            core.display(),
            exe.display()
        ))
    }
}

/// Loads and unloads the MPI library, so that a host without Open MPI gets a fix, not a
/// loader error.
fn check_mpi_library() -> Result<(), String> {
    let name = CString::new(MPI_LIBRARY).expect("no NUL in a constant");
    // SAFETY: dlopen with a valid C string; the handle is closed right away.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!(
            "{MPI_LIBRARY} not found: install Open MPI (apt-get install openmpi-bin \
             libopenmpi-dev, or ./launch/setup.sh) or load your cluster's Open MPI module"
        ));
    }
    // SAFETY: handle came from dlopen above and nothing from it is in use.
    unsafe { libc::dlclose(handle) };
    Ok(())
}

fn library_path_with(dir: &std::path::Path) -> OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(existing) = env::var_os("LD_LIBRARY_PATH") {
        paths.extend(env::split_paths(&existing).filter(|p| p != dir));
    }
    env::join_paths(paths).unwrap_or_else(|_| dir.as_os_str().to_owned())
}
