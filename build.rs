//! Gives the binaries an rpath to the real torch lib folder that `launch/setup.sh` recorded,
//! so that they run on the machine that built them with no LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-env-changed=BIOBERT_TORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("LIBTORCH").is_none() {
        println!("cargo:warning=LIBTORCH is not set: run ./launch/setup.sh once, then cargo build");
    }
    if let Ok(dir) = std::env::var("BIOBERT_TORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
