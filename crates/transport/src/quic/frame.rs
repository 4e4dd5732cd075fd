//! Frames: one envelope per unidirectional stream, a 4-byte big-endian length then the
//! envelope's bytes. Writing one, reading one within the mesh's limits, and why a received
//! frame is refused.

use std::time::Duration;

use quinn::Connection;

use super::{MeshConfig, REFUSED};
use crate::{Envelope, TransportError};

/// Sends one frame on a new unidirectional stream of `conn`.
pub(super) async fn write_frame(
    conn: &Connection,
    frame: &[u8],
) -> Result<quinn::SendStream, String> {
    let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
    stream.write_all(frame).await.map_err(|e| e.to_string())?;
    stream.finish().map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Why a received frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameRefused {
    #[error("frame exceeds the {0}-byte limit")]
    TooLarge(usize),
    #[error("frame incomplete after {0:?}; stream reset")]
    Late(Duration),
    #[error("read: {0}")]
    Read(quinn::ReadToEndError),
    #[error("frame shorter than its length prefix")]
    NoPrefix,
    #[error("length prefix does not match the frame")]
    PrefixMismatch,
    #[error(transparent)]
    Malformed(TransportError),
    /// The envelope's signature does not verify under the certificate of the peer it came
    /// from (named): malformed, and the peer's doing.
    #[error("the signature of node {0} does not verify")]
    BadSignature(crate::NodeId),
    #[error(transparent)]
    Router(crate::router::Refusal),
}

impl FrameRefused {
    /// A short name of the reason, for rate-limiting its log lines.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too large",
            Self::Late(_) => "late",
            Self::Read(_) => "read",
            Self::NoPrefix | Self::PrefixMismatch | Self::Malformed(_) | Self::BadSignature(_) => {
                "malformed"
            }
            Self::Router(refusal) => refusal.kind(),
        }
    }

    /// Whether the peer was over one of its quotas (the frame deadline is one).
    pub(super) fn is_over_quota(&self) -> bool {
        match self {
            Self::Late(_) => true,
            Self::Router(refusal) => refusal.is_over_quota(),
            Self::TooLarge(_)
            | Self::Read(_)
            | Self::NoPrefix
            | Self::PrefixMismatch
            | Self::Malformed(_)
            | Self::BadSignature(_) => false,
        }
    }
}

/// Reads one length-prefixed frame within the frame deadline; an oversize or late frame's
/// stream is stopped, which makes the sender reset it.
pub(super) async fn read_frame(
    config: &MeshConfig,
    stream: &mut quinn::RecvStream,
) -> Result<Envelope, FrameRefused> {
    let limit = config.max_frame_bytes;
    let read = tokio::time::timeout(config.frame_read_timeout, stream.read_to_end(limit + 4));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            let _ = stream.stop(REFUSED);
            return Err(FrameRefused::TooLarge(limit));
        }
        Ok(Err(e)) => return Err(FrameRefused::Read(e)),
        Err(_) => {
            let _ = stream.stop(REFUSED);
            return Err(FrameRefused::Late(config.frame_read_timeout));
        }
    };
    decode_frame(&bytes)
}

/// Decodes one received frame (a stream's bytes: a 4-byte big-endian length, then the
/// envelope). The decoding boundary of everything a peer sends; public so the fuzz targets
/// (`crates/fuzz`) call this very function.
pub fn decode_frame(bytes: &[u8]) -> Result<Envelope, FrameRefused> {
    let Some((len, body)) = bytes.split_first_chunk::<4>() else {
        return Err(FrameRefused::NoPrefix);
    };
    if u32::from_be_bytes(*len) as usize != body.len() {
        return Err(FrameRefused::PrefixMismatch);
    }
    Envelope::decode(body).map_err(FrameRefused::Malformed)
}
