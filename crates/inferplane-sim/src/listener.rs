//! A TCP listener that obeys the `refuse_connections` fault: while it is set, the
//! listening socket is closed (connects are refused) and reads on already-open connections
//! fail with a reset, as when an engine process dies; when cleared, the same address is
//! bound again.

use crate::faults::FaultConfig;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A listener for `axum::serve` that can refuse connections on cue.
#[derive(Debug)]
pub struct FaultyListener {
    addr: SocketAddr,
    inner: Option<TcpListener>,
    faults: watch::Receiver<FaultConfig>,
}

impl FaultyListener {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener, faults: watch::Receiver<FaultConfig>) -> io::Result<Self> {
        Ok(FaultyListener {
            addr: listener.local_addr()?,
            inner: Some(listener),
            faults,
        })
    }
}

impl axum::serve::Listener for FaultyListener {
    type Io = FaultyStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let refuse = self.faults.borrow_and_update().refuse_connections;
            if refuse {
                self.inner = None;
                if self.faults.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            }
            let listener = match &self.inner {
                Some(l) => l,
                None => match TcpListener::bind(self.addr).await {
                    Ok(l) => self.inner.insert(l),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            tokio::select! {
                res = listener.accept() => match res {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        return (FaultyStream { inner: stream, faults: self.faults.clone() }, peer);
                    }
                    // Out of file descriptors and the like: back off briefly.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                },
                changed = self.faults.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// A TCP stream whose reads fail while connections are being refused.
#[derive(Debug)]
pub struct FaultyStream {
    inner: TcpStream,
    faults: watch::Receiver<FaultConfig>,
}

impl AsyncRead for FaultyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.faults.borrow().refuse_connections {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulated engine stopped accepting connections",
            )));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
