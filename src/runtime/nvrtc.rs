//! NVRTC, CUDA's run-time compiler, loaded at run time (libnvrtc from the nvidia wheels
//! beside torch): it turns CUDA C++ into PTX with no GPU and no CUDA toolkit, so the fused
//! kernels (`model::fused_elementwise`) are compiled on the host that runs them, for the
//! GPU it has, and the tests compile them on hosts without one.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;

use crate::runtime::nvidia_wheels::WheelLibrary;
use libloading::{Library, Symbol};

type NvrtcResult = c_int;
type Program = *mut std::ffi::c_void;
const NVRTC_SUCCESS: NvrtcResult = 0;

/// The sonames tried, newest first: CUDA 13's and CUDA 12's.
const NVRTC: WheelLibrary = WheelLibrary {
    sonames: ["libnvrtc.so.13", "libnvrtc.so.12"],
    cuda12_component: "cuda_nvrtc",
};

pub struct Nvrtc {
    lib: Library,
    /// libnvrtc-builtins, which libnvrtc opens by its soname when it compiles: loaded first
    /// from the same folder when libnvrtc comes from a wheel (no rpath leads there).
    _builtins: Option<Library>,
}

impl Nvrtc {
    /// Finds libnvrtc: on the loader's path, or in the nvidia wheels beside torch's lib
    /// folder (`torch_lib_dir`).
    pub fn open(torch_lib_dir: Option<&Path>) -> Result<Nvrtc, String> {
        let candidates = NVRTC.candidates(torch_lib_dir);
        let mut errors = Vec::new();
        for name in candidates {
            let builtins = Path::new(&name).parent().and_then(builtins_beside);
            // SAFETY: libnvrtc's initialisers are what any program using NVRTC runs.
            match unsafe { Library::new(&name) } {
                Ok(lib) => {
                    return Ok(Nvrtc {
                        lib,
                        _builtins: builtins,
                    })
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(format!("NVRTC was not found ({})", errors.join("; ")))
    }

    fn symbol<T>(&self, name: &[u8]) -> Result<Symbol<'_, T>, String> {
        // SAFETY: each caller names the symbol with its documented C signature.
        unsafe { self.lib.get(name) }.map_err(|e| format!("libnvrtc: {e}"))
    }

    /// NVRTC's version, e.g. (13, 0).
    pub fn version(&self) -> Result<(i32, i32), String> {
        let get: Symbol<unsafe extern "C" fn(*mut c_int, *mut c_int) -> NvrtcResult> =
            self.symbol(b"nvrtcVersion\0")?;
        let (mut major, mut minor) = (0, 0);
        self.check("nvrtcVersion", unsafe { get(&mut major, &mut minor) })?;
        Ok((major, minor))
    }

    fn check(&self, call: &str, code: NvrtcResult) -> Result<(), String> {
        if code == NVRTC_SUCCESS {
            return Ok(());
        }
        let text = self
            .symbol::<unsafe extern "C" fn(NvrtcResult) -> *const c_char>(b"nvrtcGetErrorString\0")
            // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string.
            .map(|f| {
                unsafe { CStr::from_ptr(f(code)) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|_| format!("error {code}"));
        Err(format!("{call}: {text}"))
    }

    /// The PTX of `source` for compute capability `(major, minor)`, or the compiler's log.
    /// `name` names the source in the log.
    pub fn ptx(&self, source: &str, name: &str, capability: (i32, i32)) -> Result<String, String> {
        let create: Symbol<
            unsafe extern "C" fn(
                *mut Program,
                *const c_char,
                *const c_char,
                c_int,
                *const *const c_char,
                *const *const c_char,
            ) -> NvrtcResult,
        > = self.symbol(b"nvrtcCreateProgram\0")?;
        let compile: Symbol<
            unsafe extern "C" fn(Program, c_int, *const *const c_char) -> NvrtcResult,
        > = self.symbol(b"nvrtcCompileProgram\0")?;
        let destroy: Symbol<unsafe extern "C" fn(*mut Program) -> NvrtcResult> =
            self.symbol(b"nvrtcDestroyProgram\0")?;
        let src = CString::new(source).map_err(|_| format!("{name}: a NUL byte in the source"))?;
        let cname = CString::new(name).map_err(|_| format!("{name}: a NUL byte in the name"))?;
        let mut program: Program = std::ptr::null_mut();
        // SAFETY: the strings live across the call; no headers are passed (0, null, null).
        self.check("nvrtcCreateProgram", unsafe {
            create(
                &mut program,
                src.as_ptr(),
                cname.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        })?;
        let options: Vec<CString> = [
            format!(
                "--gpu-architecture=compute_{}{}",
                capability.0, capability.1
            ),
            "--std=c++17".to_string(),
            "-lineinfo".to_string(),
        ]
        .into_iter()
        .map(|o| CString::new(o).expect("options have no NUL"))
        .collect();
        let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: `program` was created above; the options outlive the call.
        let compiled = unsafe { compile(program, pointers.len() as c_int, pointers.as_ptr()) };
        let result = match self.check("nvrtcCompileProgram", compiled) {
            Ok(()) => self.program_ptx(program),
            Err(e) => Err(format!("{name}: {e}: {}", self.program_log(program))),
        };
        // SAFETY: `program` is live and destroyed once.
        unsafe { destroy(&mut program) };
        result
    }

    fn program_ptx(&self, program: Program) -> Result<String, String> {
        let size: Symbol<unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult> =
            self.symbol(b"nvrtcGetPTXSize\0")?;
        let get: Symbol<unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult> =
            self.symbol(b"nvrtcGetPTX\0")?;
        let mut n = 0usize;
        // SAFETY: `program` compiled; the buffer has the size NVRTC reported.
        self.check("nvrtcGetPTXSize", unsafe { size(program, &mut n) })?;
        let mut buf = vec![0u8; n.max(1)];
        self.check("nvrtcGetPTX", unsafe {
            get(program, buf.as_mut_ptr().cast())
        })?;
        let text =
            CStr::from_bytes_until_nul(&buf).map_err(|_| "PTX without its NUL".to_string())?;
        Ok(text.to_string_lossy().into_owned())
    }

    fn program_log(&self, program: Program) -> String {
        let log = || -> Result<String, String> {
            let size: Symbol<unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult> =
                self.symbol(b"nvrtcGetProgramLogSize\0")?;
            let get: Symbol<unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult> =
                self.symbol(b"nvrtcGetProgramLog\0")?;
            let mut n = 0usize;
            // SAFETY: `program` is live; the buffer has the size NVRTC reported.
            self.check("nvrtcGetProgramLogSize", unsafe { size(program, &mut n) })?;
            let mut buf = vec![0u8; n.max(1)];
            self.check("nvrtcGetProgramLog", unsafe {
                get(program, buf.as_mut_ptr().cast())
            })?;
            Ok(String::from_utf8_lossy(&buf)
                .trim_end_matches('\0')
                .trim()
                .to_string())
        };
        log().unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

/// libnvrtc-builtins.so.<version> in `dir`, loaded, if there is one.
fn builtins_beside(dir: &Path) -> Option<Library> {
    let entries = std::fs::read_dir(dir).ok()?;
    let path = entries.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("libnvrtc-builtins.so.") && !n.contains(".alt."))
    })?;
    // SAFETY: the builtins library has no initialisers beyond the loader's own.
    unsafe { Library::new(&path) }.ok()
}
