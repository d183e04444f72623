//! One client connection: size-prefixed frames in, responses out, in request order.
//!
//! Requests are read and dispatched one after another, so proposals from one connection
//! reach Raft in the order they were sent (idempotent producers depend on it). A handler
//! may answer later (a produce waiting for its commit); such answers queue behind each
//! other in the writer task, which lets a client pipeline produce requests while every
//! response still leaves in request order.

use std::net::SocketAddr;
use std::sync::Arc;

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::metrics;
use crate::protocol::{self, Listener, Reply};
use crate::shutdown::Shutdown;

/// Responses a connection may have outstanding before it stops reading requests.
const MAX_IN_FLIGHT: usize = 64;

/// Responses up to this size are gathered in the writer's buffer (pipelined ones share a
/// syscall); larger ones (fetches with records) go out with vectored writes from their own
/// segments, so their record bytes are not copied in user space.
const BUFFERED_MAX: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {0} is negative or above max_request_bytes")]
    BadSize(i32),
    #[error("connection closed mid-frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub async fn run(
    socket: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    broker: Arc<Broker>,
    shutdown: Shutdown,
) {
    let (mut reader, writer) = socket.into_split();
    let (tx, rx) = mpsc::channel::<Reply>(MAX_IN_FLIGHT);
    let write_task = tokio::spawn(write_loop(writer, rx));
    let max = broker.settings.max_request_bytes;
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut reader, max) => f,
            _ = shutdown.clone().wait() => break,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                metrics::REQUEST_ERRORS
                    .with_label_values(&["bad_frame"])
                    .inc();
                tracing::warn!(%peer, "closing connection: {e}");
                break;
            }
        };
        metrics::BYTES_IN.inc_by(frame.len() as u64 + 4);
        let reply = tokio::select! {
            r = protocol::handle(&broker, frame, peer, listener) => r,
            _ = shutdown.clone().wait() => break,
        };
        match reply {
            Ok(reply) => {
                if tx.send(reply).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(%peer, "closing connection: {e:#}");
                break;
            }
        }
    }
    drop(tx);
    let _ = write_task.await;
}

/// Reads one frame; `None` on a clean end of stream between frames.
async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(len);
    if size < 0 || size as usize > max {
        return Err(FrameError::BadSize(size));
    }
    let mut buf = BytesMut::zeroed(size as usize);
    reader
        .read_exact(&mut buf)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
    Ok(Some(buf.freeze()))
}

async fn write_loop(writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Reply>) {
    let mut writer = BufWriter::with_capacity(BUFFERED_MAX, writer);
    while let Some(reply) = rx.recv().await {
        let frame = match reply {
            Reply::Now(f) => f,
            Reply::Later(f) => f.await,
        };
        if let Some(frame) = frame {
            let len = frame.len();
            metrics::BYTES_OUT.inc_by(len as u64);
            let written = if len <= BUFFERED_MAX {
                write_each(&mut writer, frame.parts()).await
            } else {
                match writer.flush().await {
                    Ok(()) => write_vectored_all(writer.get_mut(), frame.parts()).await,
                    Err(e) => Err(e),
                }
            };
            if written.is_err() {
                return;
            }
        }
        // Flush when nothing else is ready to go, so pipelined responses share a syscall.
        if rx.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.flush().await;
}

async fn write_each<W: AsyncWrite + Unpin>(w: &mut W, parts: &[Bytes]) -> std::io::Result<()> {
    for part in parts {
        w.write_all(part).await?;
    }
    Ok(())
}

/// Writes every part, as few syscalls as the socket allows (one `writev` each time).
async fn write_vectored_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[Bytes],
) -> std::io::Result<()> {
    // (Linux takes up to 1024 iovecs per call; a fetch has two or three per partition.)
    const MAX_IOV: usize = 256;
    let (mut index, mut offset) = (0, 0);
    while index < parts.len() {
        let slices: Vec<IoSlice> = std::iter::once(&parts[index][offset..])
            .chain(parts[index + 1..].iter().map(|p| &p[..]))
            .take(MAX_IOV)
            .map(IoSlice::new)
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < parts.len() && n >= parts[index].len() - offset {
            n -= parts[index].len() - offset;
            (index, offset) = (index + 1, 0);
        }
        offset += n;
    }
    Ok(())
}
