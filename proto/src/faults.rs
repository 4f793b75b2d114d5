//! The text by which an ONNX Runtime / CUDA error is known for what it is: one list, read by the
//! workers (to classify an error before replying) and by the supervisor (to classify a dead
//! worker's stderr), so the two can never drift apart.

use crate::ErrorKind;

/// Lower-case fragments of a sticky CUDA fault (launch failure, illegal address): the process's
/// CUDA context is poisoned and only a new process recovers.
pub const CUDA_FAULT_SIGNATURES: &[&str] = &[
    "unspecified launch failure",
    "illegal memory access",
    "cudaerrorillegaladdress",
    "cudaerrorlaunchfailure",
    "cuda_error_launch_failed",
    "cuda_error_illegal_address",
    "cuda failure 719",
    "cuda failure 700",
    "cublas_status_execution_failed",
];

/// Lower-case fragments of an allocation failure (device or host).
pub const OUT_OF_MEMORY_SIGNATURES: &[&str] = &[
    "out of memory",
    "cudaerrormemoryallocation",
    "failed to allocate memory",
    "cudamalloc failed",
    "bfcarena",
    "std::bad_alloc",
    "memory allocation of",
    "cublas_status_alloc_failed",
];

/// What an error message says happened: a CUDA fault, an allocation failure, or neither
/// ([`ErrorKind::Inference`]). Case does not matter.
pub fn classify_message(msg: &str) -> ErrorKind {
    let m = msg.to_ascii_lowercase();
    if CUDA_FAULT_SIGNATURES.iter().any(|s| m.contains(s)) {
        ErrorKind::CudaFault
    } else if OUT_OF_MEMORY_SIGNATURES.iter().any(|s| m.contains(s)) {
        ErrorKind::OutOfMemory
    } else {
        ErrorKind::Inference
    }
}

/// The signature-bearing fragment of `text` with its kind, if any (CUDA faults first).
pub fn signature_in(text: &str) -> Option<(ErrorKind, &'static str)> {
    let m = text.to_ascii_lowercase();
    CUDA_FAULT_SIGNATURES
        .iter()
        .find(|s| m.contains(*s))
        .map(|s| (ErrorKind::CudaFault, *s))
        .or_else(|| {
            OUT_OF_MEMORY_SIGNATURES
                .iter()
                .find(|s| m.contains(*s))
                .map(|s| (ErrorKind::OutOfMemory, *s))
        })
}
