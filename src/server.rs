//! The listener: accept, limit concurrent sessions, and shut down without losing mail.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use strainer_receive::{Handler, Session, SessionConfig, Shutdown, refuse_busy};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

/// Listens on `addr` with room in the accept queue for a burst of `max_sessions` connections.
///
/// The default backlog (128) overflowed when 500 clients connected at once: the kernel dropped
/// the handshakes it could not queue, and clients waited a second or more for a SYN-ACK
/// retransmission, or forever, instead of getting our greeting or our 421.
pub fn listen(addr: std::net::SocketAddr, max_sessions: usize) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // The kernel caps this at net.core.somaxconn (4096 on current Debian).
    let backlog = u32::try_from(max_sessions.saturating_mul(2)).unwrap_or(u32::MAX).max(1024);
    socket.listen(backlog)
}

/// Serves sessions on `listener` with `handler` until `stop` resolves, then drains: idle
/// sessions get 421 at once, transactions in flight may finish within `grace`, after which the
/// rest are answered 421 (Postfix keeps those messages queued).
pub async fn run<H: Handler>(
    metrics: Option<Arc<crate::metrics::Metrics>>,
    listener: TcpListener,
    session: SessionConfig,
    max_sessions: usize,
    handler: Arc<H>,
    grace: Duration,
    stop: impl Future<Output = ()>,
) {
    let session = Arc::new(session);
    let permits = Arc::new(Semaphore::new(max_sessions));
    let (tx, rx) = watch::channel(Shutdown::Running);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let s = Session::new(stream, peer, Arc::clone(&session), Arc::clone(&handler), rx.clone());
                let m = metrics.clone();
                tokio::spawn(async move {
                    m.iter().for_each(|m| m.session(true));
                    s.run().await;
                    m.iter().for_each(|m| m.session(false));
                    drop(permit);
                });
            }
            Err(_) => {
                warn!(%peer, max_sessions, "session limit reached, answering 421");
                metrics.iter().for_each(|m| m.refused());
                let host = session.hostname.clone();
                tokio::spawn(async move { refuse_busy(stream, &host).await });
            }
        }
    }
    drop(listener);
    let busy = max_sessions - permits.available_permits();
    info!(sessions = busy, grace_s = grace.as_secs(), "stopping: draining sessions");
    let _ = tx.send(Shutdown::Draining);
    let all = u32::try_from(max_sessions).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, permits.acquire_many(all)).await.is_err() {
        warn!(
            sessions = max_sessions - permits.available_permits(),
            "drain deadline passed: answering 421 to transactions in flight"
        );
        let _ = tx.send(Shutdown::Abort);
        let _ = tokio::time::timeout(Duration::from_secs(5), permits.acquire_many(all)).await;
    }
    info!("stopped");
}
