//! A step's loss sums and gradient norm, read on the host one step late, so that the host
//! never waits for the device inside a step. The values are copied into page-locked host
//! memory behind the step's own work and an event is recorded after the copy; the loop reads
//! them once it has queued the next step, waiting for that event only, while the device
//! still has the whole next step to run.
//!
//! On the CPU the values are there as soon as the step returns; nothing is deferred but the
//! reading.

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};

use crate::runtime::cuda_runtime::{CudaRuntime, Event, DEFAULT_STREAM};
use crate::runtime::torch_runtime;

pub struct StepReadback {
    /// Present on a GPU.
    cuda: Option<CudaRuntime>,
}

/// A copy on its way to the host.
pub struct InFlight {
    values: Tensor,
    copied: Option<Event>,
}

impl StepReadback {
    pub fn new(device: Device) -> Result<StepReadback> {
        let cuda = match device {
            Device::Cuda(_) => Some(
                CudaRuntime::open(torch_runtime::loaded_torch_lib_dir().as_deref())
                    .map_err(|e| anyhow!("reading step metrics without waiting: {e}"))?,
            ),
            _ => None,
        };
        Ok(StepReadback { cuda })
    }

    /// Queues the copy of `values` (a device tensor) to the host behind the work queued so
    /// far.
    pub fn start(&self, values: &Tensor) -> Result<InFlight> {
        let Some(cuda) = &self.cuda else {
            return Ok(InFlight {
                values: values.f_to_device_(Device::Cpu, Kind::Double, false, true)?,
                copied: None,
            });
        };
        // A non-blocking copy to the host lands in page-locked memory (libtorch allocates
        // it so), so the copy is truly queued and the host goes on.
        let values = values.f_to_device_(Device::Cpu, Kind::Double, true, false)?;
        let event = cuda.create_event().map_err(anyhow::Error::msg)?;
        cuda.record(event, DEFAULT_STREAM)
            .map_err(anyhow::Error::msg)?;
        Ok(InFlight {
            values,
            copied: Some(event),
        })
    }

    /// The values, once the work before them has finished (the host waits for that alone).
    pub fn finish(&self, in_flight: InFlight) -> Result<Vec<f64>> {
        if let (Some(cuda), Some(event)) = (&self.cuda, in_flight.copied) {
            let waited = cuda.synchronize(event);
            cuda.destroy_event(event).map_err(anyhow::Error::msg)?;
            waited.map_err(anyhow::Error::msg)?;
        }
        Ok(Vec::<f64>::try_from(&in_flight.values)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_as_they_were_computed() {
        let readback = StepReadback::new(Device::Cpu).unwrap();
        let values = Tensor::from_slice(&[1.5f64, f64::NAN, 3.0]);
        let in_flight = readback.start(&values).unwrap();
        // Later work on the same tensor does not change what was read.
        let _ = values.shallow_clone().fill_(0.0);
        let read = readback.finish(in_flight).unwrap();
        assert_eq!(read[0], 1.5);
        assert!(read[1].is_nan());
        assert_eq!(read[2], 3.0);
    }
}
