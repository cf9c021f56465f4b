//! Gives the binaries an rpath to the real torch lib folder that `launch/setup.sh` recorded,
//! so that they run on the machine that built them with no LD_LIBRARY_PATH, and compiles the
//! small C and C++ shims (src/shim/) against the headers of the libtorch that tch links.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=BIOBERT_TORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=src/shim/fused_adamw.cpp");
    println!("cargo:rerun-if-changed=src/shim/pinned_memory.cpp");
    println!("cargo:rerun-if-changed=src/shim/flash_attention.cpp");
    println!("cargo:rerun-if-changed=src/shim/profiler.cpp");
    println!("cargo:rerun-if-changed=src/shim/grad_hooks.cpp");
    println!("cargo:rerun-if-changed=src/shim/mpi_in_place.c");
    println!("cargo:rerun-if-changed=src/shim/fused_elementwise.cuh");
    println!("cargo:rerun-if-changed=src/shim/fused_elementwise_host.cpp");
    println!("cargo:rerun-if-changed=src/shim/fused_elementwise.cpp");
    if let Ok(dir) = std::env::var("BIOBERT_TORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!("LIBTORCH is not set: run ./launch/setup.sh once, then cargo build");
    };
    // The same flags torch-sys compiles its own wrapper with.
    cc::Build::new()
        .cpp(true)
        .file("src/shim/fused_adamw.cpp")
        .file("src/shim/pinned_memory.cpp")
        .file("src/shim/flash_attention.cpp")
        .file("src/shim/profiler.cpp")
        .file("src/shim/grad_hooks.cpp")
        .file("src/shim/fused_elementwise.cpp")
        .include(libtorch.join("include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("biobert_shim");
    // The host build of the fused kernels' device functions, for the tests (no libtorch).
    cc::Build::new()
        .cpp(true)
        .file("src/shim/fused_elementwise_host.cpp")
        .flag("-std=c++17")
        .flag("-fno-fast-math")
        .flag("-ffp-contract=off")
        .compile("biobert_fused_host");
    // MPI_IN_PLACE from the mpi.h that rsmpi (mpi-sys) builds against, found the same way.
    let mpi = build_probe_mpi::probe()
        .unwrap_or_else(|e| panic!("MPI not found ({e:?}): run ./launch/setup.sh once"));
    let mut c = cc::Build::new();
    c.file("src/shim/mpi_in_place.c");
    for dir in &mpi.include_paths {
        c.include(dir);
    }
    c.compile("biobert_mpi_shim");
}
