//! The one codec: a frame is a little-endian `u32` payload length followed by the payload,
//! a [postcard](https://docs.rs/postcard) encoding of one message.
//!
//! Frames larger than [`MAX_FRAME`] are refused before anything is allocated for them, and
//! malformed or truncated input is a typed [`CodecError`], never a panic.

use serde::{de::DeserializeOwned, Serialize};
use std::io::{Read, Write};

/// Largest payload accepted or sent: 8 MiB holds a 120 s segment of f32 samples.
pub const MAX_FRAME: u32 = 8 * 1024 * 1024;

/// Bytes in the length prefix.
pub const HEADER: usize = 4;

/// Everything that can go wrong reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed by peer")]
    Closed,
    /// The connection ended inside a frame.
    #[error("connection ended inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: u32 },
    /// The payload is not a valid encoding of the expected message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The underlying socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl CodecError {
    /// True when the stream can no longer be trusted to be at a frame boundary.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, CodecError::Malformed(_))
    }
}

/// Encode one message as a complete frame (prefix + payload).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = postcard::to_extend(msg, vec![0u8; HEADER])?;
    let len = buf.len() - HEADER;
    if len > MAX_FRAME as usize {
        return Err(CodecError::TooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    buf[..HEADER].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// Decode one payload (without its prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Check a length prefix against [`MAX_FRAME`].
pub fn payload_len(header: [u8; HEADER]) -> Result<usize, CodecError> {
    let len = u32::from_le_bytes(header);
    if len > MAX_FRAME {
        return Err(CodecError::TooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    Ok(len as usize)
}

/// Try to take one frame from the front of `buf`: `Ok(None)` means more bytes are needed,
/// `Ok(Some((msg, used)))` gives the message and how many bytes it took.
pub fn split_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, CodecError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = payload_len(buf[..HEADER].try_into().expect("4 bytes"))?;
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let msg = decode(&buf[HEADER..HEADER + len])?;
    Ok(Some((msg, HEADER + len)))
}

/// Read exactly `buf.len()` bytes, telling a clean close (nothing read) from a truncation.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8], at_boundary: bool) -> Result<(), CodecError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && at_boundary => return Err(CodecError::Closed),
            Ok(0) => {
                return Err(CodecError::Truncated {
                    got,
                    want: buf.len(),
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Blocking read of one message.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, CodecError> {
    let mut header = [0u8; HEADER];
    read_full(r, &mut header, true)?;
    let len = payload_len(header)?;
    let mut payload = vec![0u8; len];
    read_full(r, &mut payload, false)?;
    decode(&payload)
}

/// Blocking write of one message.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), CodecError> {
    let frame = encode(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Async frame I/O over tokio streams (the supervisor's side).
#[cfg(feature = "tokio")]
pub mod tokio_io {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Read one message; [`CodecError::Closed`] on a clean close between frames.
    pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
        r: &mut R,
    ) -> Result<T, CodecError> {
        let mut header = [0u8; HEADER];
        let mut got = 0;
        while got < HEADER {
            match r.read(&mut header[got..]).await? {
                0 if got == 0 => return Err(CodecError::Closed),
                0 => return Err(CodecError::Truncated { got, want: HEADER }),
                n => got += n,
            }
        }
        let len = payload_len(header)?;
        let mut payload = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match r.read(&mut payload[got..]).await? {
                0 => return Err(CodecError::Truncated { got, want: len }),
                n => got += n,
            }
        }
        decode(&payload)
    }

    /// Write one message and flush.
    pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
        w: &mut W,
        msg: &T,
    ) -> Result<(), CodecError> {
        let frame = encode(msg)?;
        w.write_all(&frame).await?;
        w.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
        let frame = encode(&msg).unwrap();
        let (back, used): (T, usize) = split_frame(&frame).unwrap().unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, frame.len());
        let back: T = read_frame(&mut &frame[..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn every_message_roundtrips() {
        roundtrip(Reply::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            role: Role::Asr,
            model: "moonshine-base-en".into(),
            placement: vec![
                ComponentPlacement {
                    component: "encoder".into(),
                    device: Device::Cuda(0),
                },
                ComponentPlacement {
                    component: "decoder".into(),
                    device: Device::Cpu,
                },
            ],
            load_ms: 170,
            pid: 42,
            runtime: "1.32.0".into(),
        }));
        roundtrip(Request::Ping { id: 7 });
        roundtrip(Request::VadFrames {
            id: 1,
            samples: vec![0.25; VAD_FRAME * 2],
        });
        roundtrip(Request::VadReset { id: 2 });
        roundtrip(Request::Transcribe {
            id: 3,
            segment: 9,
            samples: vec![-0.5; 1600],
        });
        roundtrip(Request::InjectFault {
            id: 4,
            fault: Fault::Exit(3),
        });
        roundtrip(Request::InjectFault {
            id: 4,
            fault: Fault::GrowMemory(64),
        });
        roundtrip(Request::Shutdown);
        roundtrip(Reply::Pong { id: 7 });
        roundtrip(Reply::VadProbs {
            id: 1,
            probs: vec![0.9, 0.01],
            micros: 300,
        });
        roundtrip(Reply::Done { id: 2 });
        roundtrip(Reply::Transcript {
            id: 3,
            segment: 9,
            text: "go forward ten meters".into(),
            tokens: 6,
            micros: 12_000,
        });
        roundtrip(Reply::Error(WorkerError {
            id: None,
            kind: ErrorKind::Protocol,
            message: "bad".into(),
        }));
        roundtrip(Reply::Bye);
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocating() {
        let mut bytes = (MAX_FRAME + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        assert!(matches!(
            read_frame::<_, Request>(&mut &bytes[..]),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            split_frame::<Request>(&bytes),
            Err(CodecError::TooLarge { .. })
        ));
        let max = u32::MAX.to_le_bytes();
        assert!(matches!(
            read_frame::<_, Request>(&mut &max[..]),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn clean_close_and_truncation_are_told_apart() {
        assert!(matches!(
            read_frame::<_, Request>(&mut &[][..]),
            Err(CodecError::Closed)
        ));
        let frame = encode(&Request::Ping { id: 1 }).unwrap();
        let cut = &frame[..frame.len() - 1];
        assert!(matches!(
            read_frame::<_, Request>(&mut &cut[..]),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            read_frame::<_, Request>(&mut &frame[..2]),
            Err(CodecError::Truncated { .. })
        ));
        assert!(split_frame::<Request>(cut).unwrap().is_none());
    }

    #[test]
    fn malformed_payload_is_not_fatal() {
        let mut bytes = 3u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
        let err = read_frame::<_, Request>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(_)), "{err}");
        assert!(!err.is_fatal());
    }

    #[test]
    fn oversized_message_is_refused_on_encode() {
        let samples = vec![0.0f32; MAX_FRAME as usize / 4 + 1];
        assert!(matches!(
            encode(&Request::Transcribe {
                id: 1,
                segment: 1,
                samples
            }),
            Err(CodecError::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_frame::<_, Request>(&mut &bytes[..]);
            let _ = read_frame::<_, Reply>(&mut &bytes[..]);
            let _ = split_frame::<Request>(&bytes);
            let _ = decode::<Reply>(&bytes);
        }

        #[test]
        fn random_payload_behind_valid_prefix_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..2048)
        ) {
            let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&payload);
            match read_frame::<_, Request>(&mut &bytes[..]) {
                Ok(_) | Err(CodecError::Malformed(_)) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        #[test]
        fn corrupting_a_valid_frame_never_panics(
            id in any::<u64>(), n in 0usize..64, flip in any::<usize>(), byte in any::<u8>()
        ) {
            let mut frame = encode(&Request::VadFrames { id, samples: vec![0.5; n] }).unwrap();
            let at = flip % frame.len();
            frame[at] = byte;
            let _ = read_frame::<_, Request>(&mut &frame[..]);
        }
    }
}
