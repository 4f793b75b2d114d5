//! The request loop every worker runs: connect to the supervisor's socket, say hello, then answer
//! requests one at a time until told to shut down or the supervisor goes away.
//!
//! Bad bytes never crash a worker: a malformed frame gets a [`ErrorKind::Protocol`] reply and
//! the loop goes on; a frame that cannot be delimited (oversized, truncated) gets the same reply
//! and the worker exits with [`exit_code::PROTOCOL`], because the stream has lost its framing.

use std::io::{BufReader, BufWriter};
use std::path::Path;

use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};
use swictation_proto::codec::{self, CodecError};
use swictation_proto::{exit_code, ErrorKind, Fault, Hello, Reply, Request, WorkerError};

/// What a worker does with the requests the loop does not handle itself.
pub trait Handler {
    /// Answer one model request (`VadFrames`, `VadReset`, `Transcribe`).
    fn handle(&mut self, request: Request) -> Reply;
}

/// How the loop ended, for the worker's exit status.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Shutdown requested or the supervisor closed the socket: exit 0.
    Clean,
    /// Exit with this code (a sticky CUDA fault, an allocation failure, a lost framing).
    Exit(i32),
}

/// Connect to the supervisor at `socket`; [`exit_code::CONNECT`] is the caller's exit on failure.
pub fn connect(socket: &Path) -> std::io::Result<Stream> {
    let name = socket.to_fs_name::<GenericFilePath>()?;
    Stream::connect(name)
}

/// Run the loop on an established connection. `allow_faults` enables [`Request::InjectFault`].
pub fn serve(
    stream: Stream,
    hello: Hello,
    allow_faults: bool,
    handler: &mut dyn Handler,
) -> Outcome {
    let mut reader = BufReader::new(&stream);
    let mut writer = BufWriter::new(&stream);
    if codec::write_frame(&mut writer, &Reply::Hello(hello)).is_err() {
        return Outcome::Exit(exit_code::CONNECT);
    }
    loop {
        let request: Request = match codec::read_frame(&mut reader) {
            Ok(r) => r,
            Err(CodecError::Closed) => return Outcome::Clean,
            Err(e) => {
                let fatal = e.is_fatal();
                let reply = error(None, ErrorKind::Protocol, format!("bad request frame: {e}"));
                let sent = codec::write_frame(&mut writer, &reply).is_ok();
                if fatal || !sent {
                    eprintln!("worker: closing connection after unrecoverable frame error: {e}");
                    return Outcome::Exit(exit_code::PROTOCOL);
                }
                continue;
            }
        };
        let reply = match request {
            Request::Ping { id } => Reply::Pong { id },
            Request::Shutdown => {
                let _ = codec::write_frame(&mut writer, &Reply::Bye);
                return Outcome::Clean;
            }
            Request::InjectFault {
                fault: Fault::Garbage,
                ..
            } if allow_faults => {
                use std::io::Write;
                let _ = writer.write_all(&[0x05, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff]);
                let _ = writer.flush();
                continue;
            }
            Request::InjectFault { id, fault } if allow_faults => inject(id, fault),
            Request::InjectFault { id, .. } => error(
                Some(id),
                ErrorKind::BadRequest,
                "fault injection is disabled: start the worker with --allow-faults".into(),
            ),
            other => handler.handle(other),
        };
        let exit = match &reply {
            Reply::Error(WorkerError {
                kind: ErrorKind::CudaFault,
                ..
            }) => Some(exit_code::CUDA_FAULT),
            Reply::Error(WorkerError {
                kind: ErrorKind::OutOfMemory,
                ..
            }) => Some(exit_code::OUT_OF_MEMORY),
            _ => None,
        };
        if let Err(e) = codec::write_frame(&mut writer, &reply) {
            // A reply that cannot be encoded (too large) is reported rather than dropped.
            let fallback = error(
                reply_id(&reply),
                ErrorKind::Protocol,
                format!("reply not sent: {e}"),
            );
            if matches!(e, CodecError::TooLarge { .. })
                && codec::write_frame(&mut writer, &fallback).is_ok()
            {
                continue;
            }
            return Outcome::Clean;
        }
        if let Some(code) = exit {
            // The CUDA context is poisoned (or memory is gone): every later call would fail the
            // same way, so the only honest thing left is to exit and be restarted elsewhere.
            return Outcome::Exit(code);
        }
    }
}

fn reply_id(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::Pong { id } | Reply::Done { id } => Some(*id),
        Reply::VadProbs { id, .. } | Reply::Transcript { id, .. } => Some(*id),
        Reply::Error(e) => e.id,
        Reply::Hello(_) | Reply::Bye => None,
    }
}

/// Build an error reply.
pub fn error(id: Option<u64>, kind: ErrorKind, message: String) -> Reply {
    Reply::Error(WorkerError { id, kind, message })
}

/// The text ONNX Runtime's CUDA provider prints on a sticky launch failure.
pub const CUDA_FAULT_TEXT: &str = "CUDA failure 719: unspecified launch failure ; GPU=0 ; hostname=swictation ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc ; line=129 ; expr=cudaStreamSynchronize(stream);";

fn inject(id: u64, fault: Fault) -> Reply {
    eprintln!("worker: injecting fault {fault:?} (test mode)");
    match fault {
        Fault::Abort => std::process::abort(),
        Fault::Segfault => {
            // SAFETY: deliberately not safe: the point is to die of SIGSEGV as native code would.
            unsafe {
                let p = std::ptr::null_mut::<u64>();
                std::ptr::write_volatile(p, 1);
            }
            unreachable!()
        }
        Fault::Exit(code) => std::process::exit(code),
        Fault::Hang => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Fault::CudaFault => {
            eprintln!("{CUDA_FAULT_TEXT}");
            error(Some(id), ErrorKind::CudaFault, CUDA_FAULT_TEXT.into())
        }
        Fault::GrowMemory(mib) => {
            let bytes = (mib as usize) << 20;
            let mut v: Vec<u8> = Vec::new();
            if v.try_reserve_exact(bytes).is_err() {
                let msg = format!("failed to allocate {mib} MiB: out of memory");
                eprintln!("worker: {msg}");
                return error(Some(id), ErrorKind::OutOfMemory, msg);
            }
            v.resize(bytes, 0);
            // Touch every page so the memory is really resident, then keep it for good.
            for i in (0..bytes).step_by(4096) {
                v[i] = 1;
            }
            std::mem::forget(v);
            Reply::Done { id }
        }
        Fault::Garbage => Reply::Done { id },
    }
}
