//! A TCP proxy that can cut the links between two DCs: each DC reaches each other DC's broker
//! through one of these (the upstream URI of its federation names the proxy), so cutting it
//! separates just those two, as a network partition would, while every DC keeps its broker.
//! `cut` resets every connection through it and refuses new ones until `heal`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it stops it and resets its connections.
pub struct LinkProxy {
    addr: SocketAddr,
    target: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    /// Dropped with the proxy: the accept loop ends.
    _stop: watch::Sender<()>,
}

impl LinkProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<LinkProxy> {
        LinkProxy::bind(SocketAddr::from(([127, 0, 0, 1], 0)), target).await
    }

    /// Listens on `listen` and forwards to `target`.
    pub async fn bind(listen: SocketAddr, target: SocketAddr) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(watch::channel(false).0);
        let (stop_tx, mut stop_rx) = watch::channel(());
        let accept_cut = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop_rx.changed() => return,
                };
                let Ok((client, _)) = accepted else {
                    continue;
                };
                if *accept_cut.borrow() {
                    drop(client);
                    continue;
                }
                let mut cut_rx = accept_cut.subscribe();
                let mut stop_rx = stop_rx.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = forward(client, target) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                        _ = stop_rx.changed() => {}
                    }
                });
            }
        });
        Ok(LinkProxy {
            addr,
            target,
            cut,
            _stop: stop_tx,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Resets every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    let _ = client.shutdown().await;
    let _ = server.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn forwards_cuts_and_heals() {
        let proxy = LinkProxy::start(echo_server().await).await.expect("proxy");
        assert_eq!(round_trip(proxy.addr()).await.expect("through"), b"ping");
        // A connection open when the link is cut is reset.
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        open.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.expect("echo");
        proxy.cut();
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            open.read_to_end(&mut rest),
        )
        .await
        .expect("the cut connection ends");
        assert!(ended.is_err() || rest.is_empty());
        assert!(round_trip(proxy.addr()).await.is_err(), "refused while cut");
        proxy.heal();
        assert_eq!(round_trip(proxy.addr()).await.expect("healed"), b"ping");
    }
}
