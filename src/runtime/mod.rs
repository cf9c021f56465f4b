//! The host: finding and loading libtorch and CUDA, choosing the device, pinned memory
//! each rank's share of the cores, and the profiler.

pub mod cuda_driver;
pub mod cuda_runtime;
pub mod device_selection;
pub mod fault_injection;
pub mod grad_hooks;
pub mod nvidia_wheels;
pub mod nvrtc;
pub mod pinned_memory;
pub mod profiler;
pub mod shim_message;
pub mod stop_signal;
pub mod thread_budget;
pub mod torch_location;
pub mod torch_runtime;
