//! What a GPU probe reads: memory per device, the VRAM each of our worker processes holds,
//! utilisation and critical Xid errors. Plain data: the probes that fill it live in the
//! supervisor's `io::gpu`; the placement policy decides from it.
//!
//! Memory is in MiB throughout (written "MB", as NVML's tools do).

use serde::Serialize;

/// One GPU's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceReading {
    /// NVML device index. It equals the CUDA ordinal (`cuda:N`) only when workers run with
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID` and no `CUDA_VISIBLE_DEVICES` remapping.
    pub index: u32,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Installed memory.
    pub total_mb: u64,
    /// Memory not free (allocated plus driver-reserved), so `used_mb + free_mb == total_mb`.
    pub used_mb: u64,
    /// Memory free for new allocations.
    pub free_mb: u64,
    /// Kernel busy time over the last sample period, where the device reports it.
    pub utilization_pct: Option<u32>,
    /// `(pid, MB)` for each process with a compute context on this device, where the driver
    /// reports per-process memory (it may not: then this is empty).
    pub processes: Vec<(u32, u64)>,
}

impl DeviceReading {
    /// The VRAM process `pid` holds on this device, if it holds any that the driver reports.
    pub fn process_mb(&self, pid: u32) -> Option<u64> {
        self.processes
            .iter()
            .find(|(p, _)| *p == pid)
            .map(|(_, mb)| *mb)
    }
}

/// All GPUs at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GpuReading {
    /// Every device that could be read.
    pub devices: Vec<DeviceReading>,
    /// `(device index, Xid)` for each critical Xid error event since the previous reading.
    pub xid_errors: Vec<(u32, u64)>,
    /// One-off remarks from the probe (a device that could not be read, Xid events not supported
    /// here, ...), each given once, for the log and status.
    pub notes: Vec<String>,
}

impl GpuReading {
    /// The device with NVML index `index`.
    pub fn device(&self, index: u32) -> Option<&DeviceReading> {
        self.devices.iter().find(|d| d.index == index)
    }
}

/// What a probe saw: readings, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Availability {
    /// At least one GPU was read.
    Available(GpuReading),
    /// No GPU to use, and why in words ("no NVIDIA driver (libnvidia-ml.so.1 not found)",
    /// "no devices"): a normal state in which everything runs on the CPU.
    NoGpu(String),
}
