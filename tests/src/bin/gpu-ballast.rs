//! `gpu-ballast`: hold real GPU memory, for memory-pressure checks on the GPU machine
//! (`deploy/gpu-check.sh`). Not part of the product.
//!
//! `gpu-ballast DEVICE TARGET_PCT`: allocate device memory in 256 MiB blocks through the CUDA
//! driver API (libcuda.so.1, loaded at run time) until the card's memory in use reaches
//! TARGET_PCT percent, print `holding N MiB, card at P%`, then hold it until standard input
//! closes or the process is killed.

use std::ffi::c_void;
use std::io::Read;

type CuResult = i32;

fn check(what: &str, r: CuResult) -> Result<(), String> {
    if r == 0 {
        Ok(())
    } else {
        Err(format!("{what} failed with CUDA error {r}"))
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (device, target): (i32, f64) = match args.as_slice() {
        [_, d, p] => (
            d.parse().map_err(|_| format!("bad device {d:?}"))?,
            p.parse().map_err(|_| format!("bad percentage {p:?}"))?,
        ),
        _ => return Err("usage: gpu-ballast DEVICE TARGET_PCT".into()),
    };
    // SAFETY: the CUDA driver API, called with the documented signatures; the library stays
    // loaded for the life of the process.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").map_err(|e| e.to_string())?;
        let init: libloading::Symbol<unsafe extern "C" fn(u32) -> CuResult> =
            lib.get(b"cuInit").map_err(|e| e.to_string())?;
        let get: libloading::Symbol<unsafe extern "C" fn(*mut i32, i32) -> CuResult> =
            lib.get(b"cuDeviceGet").map_err(|e| e.to_string())?;
        let retain: libloading::Symbol<unsafe extern "C" fn(*mut *mut c_void, i32) -> CuResult> =
            lib.get(b"cuDevicePrimaryCtxRetain")
                .map_err(|e| e.to_string())?;
        let set: libloading::Symbol<unsafe extern "C" fn(*mut c_void) -> CuResult> =
            lib.get(b"cuCtxSetCurrent").map_err(|e| e.to_string())?;
        let info: libloading::Symbol<unsafe extern "C" fn(*mut usize, *mut usize) -> CuResult> =
            lib.get(b"cuMemGetInfo_v2").map_err(|e| e.to_string())?;
        let alloc: libloading::Symbol<unsafe extern "C" fn(*mut u64, usize) -> CuResult> =
            lib.get(b"cuMemAlloc_v2").map_err(|e| e.to_string())?;
        check("cuInit", init(0))?;
        let mut dev = 0;
        check("cuDeviceGet", get(&mut dev, device))?;
        let mut ctx = std::ptr::null_mut();
        check("cuDevicePrimaryCtxRetain", retain(&mut ctx, dev))?;
        check("cuCtxSetCurrent", set(ctx))?;
        const BLOCK: usize = 256 << 20;
        let mut held = 0usize;
        loop {
            let (mut free, mut total) = (0usize, 0usize);
            check("cuMemGetInfo", info(&mut free, &mut total))?;
            let used_pct = (total - free) as f64 * 100.0 / total as f64;
            if used_pct >= target || free < BLOCK {
                println!(
                    "holding {} MiB, card at {used_pct:.1}% ({} of {} MiB free)",
                    held >> 20,
                    free >> 20,
                    total >> 20
                );
                break;
            }
            let mut ptr = 0u64;
            check("cuMemAlloc", alloc(&mut ptr, BLOCK))?;
            held += BLOCK;
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // Hold until told to let go.
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        Ok(())
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("gpu-ballast: {e}");
        std::process::exit(1);
    }
}
