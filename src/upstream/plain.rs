//! ⑥ Plain-HTTP upstreams (the local backends: vLLM, llama.cpp, Ollama, TGI), on pooled
//! HTTP/1.1 connections of hyper's own, one pool per authority and connect timeout.
//!
//! hyper-util's pooled client (kept for HTTPS, where HTTP/2 and TLS come in) costs about a
//! tenth of a request's instructions around the connection it hands out: the authority hashed
//! with SipHash at checkout and again at return, a 3 KiB future boxed and moved, and a task
//! spawned per HTTP/1 request only to wait until the connection is idle again. Here a
//! connection goes back to its pool at the one moment the gateway knows it is free: when the
//! answer's body has been read to its end. An answer dropped before that closes its connection,
//! as hyper does with any HTTP/1 exchange cut short. Nor does a connection have a task of its
//! own: the attempt that holds it drives it, so that the request leaves, and the answer is
//! read, without waiting for another task's turn.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http_body::{Body as _, Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};

use super::AttemptError;
use super::client::{Body, IDLE, KEEPALIVE};
use super::error::Phase;

/// The connections to one authority: idle ones last in, first out, so a steady load keeps
/// reusing the same few and the rest age out.
#[derive(Debug)]
pub(crate) struct HostPool {
    authority: Authority,
    connect: Duration,
    max_idle: usize,
    idle: Mutex<VecDeque<Idle>>,
}

type Conn = http1::Connection<hyper_util::rt::TokioIo<tokio::net::TcpStream>, Body>;

/// A connection's two halves, driven by whoever holds them (the attempt, then its answer's
/// body), not by a task of their own: the request is written in the poll that hands it over,
/// and the answer is read in the poll that takes it, each a task switch sooner.
struct Link {
    tx: SendRequest<Body>,
    /// `None` once the connection's future ended (the peer closed, or an error): dropped then,
    /// so that a request or body still waiting on it gets the error.
    conn: Option<Pin<Box<Conn>>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl Link {
    /// Drives the connection as far as it can go now.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn
            && conn.as_mut().poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    /// Seen closed. An idle connection is not driven, so a peer's close is seen when it is
    /// next taken (and it is then passed over), or when it ages out.
    fn closed(&self) -> bool {
        self.conn.is_none() || self.tx.is_closed()
    }
}

#[derive(Debug)]
struct Idle {
    link: Link,
    since: Instant,
}

impl HostPool {
    pub(crate) fn new(authority: Authority, connect: Duration, max_idle: usize) -> HostPool {
        HostPool {
            authority,
            connect,
            max_idle: max_idle.max(1),
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// Sends `req` (origin-form, with its `Host` header) on an idle connection, or a new one.
    /// A reused connection that closed before the request was written (the server timed it
    /// out just then) is not a failure: the request goes on another.
    ///
    /// Not an `async fn`: one keeps its arguments twice (as given, and as its body's own), and a
    /// request is 256 bytes, in the future of every attempt.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(crate) fn send(
        self: &Arc<Self>,
        mut req: http::Request<Body>,
    ) -> impl Future<Output = Result<http::Response<UpBody>, AttemptError>> + '_ {
        async move {
            loop {
                let (mut link, reused) = match self.checkout() {
                    Some(link) => (link, true),
                    // Boxed: rare, and inline it would make every request's future (and each one
                    // above it) larger by its size.
                    None => (Box::pin(self.open()).await?, false),
                };
                // A connection given back at its answer's end is idle once it has seen the end
                // too; one that closed while idle (or fails now) is passed over.
                let ready = std::future::poll_fn(|cx| {
                    link.drive(cx);
                    if link.conn.is_none() {
                        return Poll::Ready(false);
                    }
                    link.tx.poll_ready(cx).map(|r| r.is_ok())
                })
                .await;
                if !ready {
                    if reused {
                        continue;
                    }
                    return Err(AttemptError::Io("transport error".into()));
                }
                let mut sent = std::pin::pin!(link.tx.try_send_request(req));
                let answer = std::future::poll_fn(|cx| {
                    link.drive(cx);
                    sent.as_mut().poll(cx)
                })
                .await;
                match answer {
                    Ok(response) => {
                        return Ok(response.map(|body| UpBody::leased(body, self.clone(), link)));
                    }
                    Err(mut e) => match e.take_message() {
                        Some(back) if reused => {
                            tracing::debug!(
                                host = self.authority.host(),
                                "an idle upstream connection closed as it was taken; trying another"
                            );
                            req = back;
                        }
                        _ => return Err(AttemptError::Io("transport error".into())),
                    },
                }
            }
        }
    }

    /// The most recently idle connection still open.
    fn checkout(&self) -> Option<Link> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(i) = idle.pop_back() {
            if !i.link.closed() {
                return Some(i.link);
            }
        }
        None
    }

    /// Takes back a connection whose answer was read to its end. Connections idle longer than
    /// the idle timeout, or closed, leave from the old end.
    fn give_back(&self, link: Link) {
        if link.closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle
            .front()
            .is_some_and(|i| i.link.closed() || now.duration_since(i.since) > IDLE)
        {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            idle.push_back(Idle { link, since: now });
        }
    }

    /// A new connection, within the connect timeout (the name's lookup included): each of the
    /// name's addresses in turn, as the resolver orders them.
    async fn open(&self) -> Result<Link, AttemptError> {
        let connect = async {
            let port = self.authority.port_u16().unwrap_or(80);
            let host = self.authority.host();
            // An IPv6 literal comes bracketed in a URL, not in an address.
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let addrs = tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| AttemptError::Connect)?;
            let mut last = AttemptError::Connect;
            for addr in addrs {
                match tcp(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let stream = tokio::time::timeout(self.connect, connect)
            .await
            .map_err(|_| AttemptError::Timeout(Phase::Connect))??;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (tx, conn) = http1::Builder::new()
            .handshake::<_, Body>(io)
            .await
            .map_err(|_| AttemptError::Connect)?;
        tracing::debug!(
            host = self.authority.host(),
            port = self.authority.port_u16(),
            "upstream connection opened"
        );
        Ok(Link {
            tx,
            conn: Some(Box::pin(conn)),
        })
    }
}

async fn tcp(addr: SocketAddr) -> Result<tokio::net::TcpStream, AttemptError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|_| AttemptError::Connect)?;
    // Requests go out whole, in one write: waiting to fill a segment only adds latency.
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    Ok(stream)
}

/// An answer's body, holding its connection until it has been read to the end.
#[derive(Debug)]
pub(crate) struct UpBody {
    inner: hyper::body::Incoming,
    lease: Option<(Arc<HostPool>, Link)>,
}

impl UpBody {
    /// A body whose connection is not ours to give back (hyper-util's client has it).
    pub(crate) fn unleased(inner: hyper::body::Incoming) -> UpBody {
        UpBody { inner, lease: None }
    }

    fn leased(inner: hyper::body::Incoming, pool: Arc<HostPool>, link: Link) -> UpBody {
        let mut body = UpBody {
            inner,
            lease: Some((pool, link)),
        };
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        if let Some((pool, link)) = self.lease.take() {
            pool.give_back(link);
        }
    }
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut frame = Pin::new(&mut this.inner).poll_frame(cx);
        // Nothing read yet: the connection reads it, here.
        if frame.is_pending()
            && let Some((_, link)) = &mut this.lease
        {
            link.drive(cx);
            frame = Pin::new(&mut this.inner).poll_frame(cx);
        }
        match &frame {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back(),
            // A connection whose answer broke off is not reused.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
