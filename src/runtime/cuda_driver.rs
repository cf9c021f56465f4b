//! The few CUDA driver API calls the doctor needs (device names, memory, compute
//! capability), loaded at run time from libcuda.so.1 so that CPU hosts need nothing.

use libloading::{Library, Symbol};
use std::ffi::{c_char, c_int, c_void, CStr, CString};

type CuResult = c_int;
const CUDA_SUCCESS: CuResult = 0;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;

#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_memory: u64,
    pub compute_capability: (i32, i32),
    /// "0000:3B:00.0": names the physical GPU whatever CUDA_VISIBLE_DEVICES renumbers.
    pub pci_bus_id: String,
}

pub struct CudaDriver {
    lib: Library,
}

impl CudaDriver {
    /// Opens libcuda.so.1 and initialises the driver; `Err` says why not.
    pub fn open() -> Result<CudaDriver, String> {
        // SAFETY: libcuda's initialisers are safe to run; it is what CUDA programs load.
        let lib = unsafe { Library::new("libcuda.so.1") }
            .map_err(|e| format!("no NVIDIA driver ({e})"))?;
        let driver = CudaDriver { lib };
        // SAFETY: cuInit(unsigned int flags) with flags 0, as documented.
        let init: Symbol<unsafe extern "C" fn(u32) -> CuResult> = driver.symbol(b"cuInit\0")?;
        check("cuInit", unsafe { init(0) })?;
        Ok(driver)
    }

    fn symbol<T>(&self, name: &[u8]) -> Result<Symbol<'_, T>, String> {
        // SAFETY: each caller names the symbol with its documented C signature.
        unsafe { self.lib.get(name) }.map_err(|e| format!("libcuda.so.1: {e}"))
    }

    /// The driver's CUDA version as (major, minor), e.g. (13, 0).
    pub fn version(&self) -> Result<(i32, i32), String> {
        let get: Symbol<unsafe extern "C" fn(*mut c_int) -> CuResult> =
            self.symbol(b"cuDriverGetVersion\0")?;
        let mut v = 0;
        check("cuDriverGetVersion", unsafe { get(&mut v) })?;
        Ok((v / 1000, (v % 1000) / 10))
    }

    pub fn devices(&self) -> Result<Vec<DeviceInfo>, String> {
        let count_fn: Symbol<unsafe extern "C" fn(*mut c_int) -> CuResult> =
            self.symbol(b"cuDeviceGetCount\0")?;
        let mut count = 0;
        check("cuDeviceGetCount", unsafe { count_fn(&mut count) })?;
        (0..count.max(0) as usize).map(|i| self.device(i)).collect()
    }

    fn device(&self, ordinal: usize) -> Result<DeviceInfo, String> {
        let get: Symbol<unsafe extern "C" fn(*mut c_int, c_int) -> CuResult> =
            self.symbol(b"cuDeviceGet\0")?;
        let name_fn: Symbol<unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult> =
            self.symbol(b"cuDeviceGetName\0")?;
        let mem_fn: Symbol<unsafe extern "C" fn(*mut usize, c_int) -> CuResult> =
            self.symbol(b"cuDeviceTotalMem_v2\0")?;
        let attr_fn: Symbol<unsafe extern "C" fn(*mut c_int, c_int, c_int) -> CuResult> =
            self.symbol(b"cuDeviceGetAttribute\0")?;
        let mut dev = 0;
        check("cuDeviceGet", unsafe { get(&mut dev, ordinal as c_int) })?;
        let mut name = [0 as c_char; 256];
        check("cuDeviceGetName", unsafe {
            name_fn(name.as_mut_ptr(), 256, dev)
        })?;
        let mut mem = 0usize;
        check("cuDeviceTotalMem", unsafe { mem_fn(&mut mem, dev) })?;
        let (mut major, mut minor) = (0, 0);
        let cc = CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR;
        check("cuDeviceGetAttribute", unsafe {
            attr_fn(&mut major, cc, dev)
        })?;
        let cc = CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR;
        check("cuDeviceGetAttribute", unsafe {
            attr_fn(&mut minor, cc, dev)
        })?;
        let bus_fn: Symbol<unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult> =
            self.symbol(b"cuDeviceGetPCIBusId\0")?;
        let mut bus = [0 as c_char; 64];
        check("cuDeviceGetPCIBusId", unsafe {
            bus_fn(bus.as_mut_ptr(), 64, dev)
        })?;
        // SAFETY: both calls NUL-terminate within the buffers they were given.
        let text = |b: &[c_char]| {
            unsafe { CStr::from_ptr(b.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(DeviceInfo {
            ordinal,
            name: text(&name),
            total_memory: mem as u64,
            compute_capability: (major, minor),
            pci_bus_id: text(&bus),
        })
    }
}

impl CudaDriver {
    /// Loads PTX into the calling thread's current context (libtorch's primary context,
    /// once libtorch has used the device on this thread) and returns the module. Modules
    /// stay loaded for the life of the process.
    pub fn load_module(&self, ptx: &str) -> Result<*mut c_void, String> {
        let load: Symbol<unsafe extern "C" fn(*mut *mut c_void, *const c_void) -> CuResult> =
            self.symbol(b"cuModuleLoadData\0")?;
        let text = CString::new(ptx).map_err(|_| "PTX with a NUL byte".to_string())?;
        let mut module = std::ptr::null_mut();
        // SAFETY: a NUL-terminated PTX image, as cuModuleLoadData takes.
        check("cuModuleLoadData", unsafe {
            load(&mut module, text.as_ptr().cast())
        })?;
        Ok(module)
    }

    /// The kernel `name` of `module`.
    pub fn function(&self, module: *mut c_void, name: &str) -> Result<*mut c_void, String> {
        let get: Symbol<
            unsafe extern "C" fn(*mut *mut c_void, *mut c_void, *const c_char) -> CuResult,
        > = self.symbol(b"cuModuleGetFunction\0")?;
        let cname = CString::new(name).map_err(|_| format!("{name}: a NUL byte"))?;
        let mut f = std::ptr::null_mut();
        // SAFETY: `module` came from load_module; the name is NUL-terminated.
        check(&format!("cuModuleGetFunction({name})"), unsafe {
            get(&mut f, module, cname.as_ptr())
        })?;
        Ok(f)
    }

    /// The address of cuLaunchKernel, for the C++ shim; valid while this driver is open.
    pub fn launch_kernel_entry(&self) -> Result<*const c_void, String> {
        let f: Symbol<unsafe extern "C" fn()> = self.symbol(b"cuLaunchKernel\0")?;
        Ok(*f as *const c_void)
    }
}

fn check(call: &str, code: CuResult) -> Result<(), String> {
    if code == CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("{call} failed with CUDA error {code}"))
    }
}
