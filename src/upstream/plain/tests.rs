use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// How the fake upstream answers each request on a connection.
#[derive(Clone, Copy)]
enum Answer {
    /// `200`, kept alive.
    Keep,
    /// `200` with `connection: close`, then closes.
    Close,
    /// `200` kept alive by its headers, but the socket is closed right after.
    Vanish,
    /// A chunked body whose second chunk comes 200 ms after the first.
    Slow,
}

/// A plain HTTP/1.1 upstream on loopback that counts the connections it accepts.
struct Upstream {
    authority: Authority,
    accepted: Arc<AtomicUsize>,
}

async fn upstream(answer: Answer) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(connection(s, answer));
        }
    });
    Upstream {
        authority,
        accepted,
    }
}

/// Reads requests (head, then a `content-length` body) and answers each.
async fn connection(mut s: TcpStream, answer: Answer) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        assert!(
            head.starts_with("post /v1/chat/completions http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nhost: "), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + len);
        let written = match answer {
            Answer::Keep | Answer::Vanish => {
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
            }
            Answer::Close => {
                s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
                    .await
            }
            Answer::Slow => {
                let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n";
                let _ = s.write_all(head).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                s.write_all(b"2\r\nok\r\n0\r\n\r\n").await
            }
        };
        if written.is_err() || matches!(answer, Answer::Close | Answer::Vanish) {
            return;
        }
    }
}

fn request(up: &Upstream) -> http::Request<Body> {
    let mut req = http::Request::new(Body::new(Bytes::from_static(b"{}")));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = "/v1/chat/completions".parse().unwrap();
    let host = http::HeaderValue::from_str(up.authority.as_str()).unwrap();
    req.headers_mut().insert(http::header::HOST, host);
    req
}

fn pool(up: &Upstream, max_idle: usize) -> Arc<HostPool> {
    Arc::new(HostPool::new(
        up.authority.clone(),
        Duration::from_secs(2),
        max_idle,
    ))
}

async fn whole(pool: &Arc<HostPool>, up: &Upstream) -> Bytes {
    let response = pool.send(request(up)).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap().to_bytes()
}

/// A slow answer's body with its first chunk read (and checked), the rest still coming.
async fn first_chunk_read(pool: &Arc<HostPool>, up: &Upstream) -> UpBody {
    let mut body = pool.send(request(up)).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "ok");
    body
}

fn idle(pool: &HostPool) -> usize {
    pool.idle.lock().unwrap().len()
}

#[tokio::test]
async fn answers_read_to_the_end_give_their_connection_back() {
    let up = upstream(Answer::Keep).await;
    let pool = pool(&up, 8);
    for _ in 0..5 {
        assert_eq!(whole(&pool, &up).await, "ok");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(idle(&pool), 1);
}

#[tokio::test]
async fn a_streamed_answer_gives_its_connection_back_at_its_end_only() {
    let up = upstream(Answer::Slow).await;
    let pool = pool(&up, 8);
    let mut body = first_chunk_read(&pool, &up).await;
    assert_eq!(idle(&pool), 0, "not back while the answer is still coming");
    // Another request meanwhile needs a connection of its own.
    assert_eq!(whole(&pool, &up).await, "okok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    while body.frame().await.is_some() {}
    assert_eq!(idle(&pool), 2);
    assert_eq!(whole(&pool, &up).await, "okok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_answer_dropped_before_its_end_closes_its_connection() {
    let up = upstream(Answer::Slow).await;
    let pool = pool(&up, 8);
    drop(first_chunk_read(&pool, &up).await);
    assert_eq!(idle(&pool), 0);
    assert_eq!(whole(&pool, &up).await, "okok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connections_the_upstream_closes_are_not_reused() {
    for answer in [Answer::Close, Answer::Vanish] {
        let up = upstream(answer).await;
        let pool = pool(&up, 8);
        for _ in 0..3 {
            assert_eq!(whole(&pool, &up).await, "ok");
            // The close reaches the connection's task a moment after the answer.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    }
}

#[tokio::test]
async fn idle_connections_are_capped() {
    let up = upstream(Answer::Slow).await;
    let pool = pool(&up, 1);
    let (a, b) = tokio::join!(whole(&pool, &up), whole(&pool, &up));
    assert_eq!((a.as_ref(), b.as_ref()), (&b"okok"[..], &b"okok"[..]));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(idle(&pool), 1);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let up = Upstream {
        authority: format!("127.0.0.1:{port}").parse().unwrap(),
        accepted: Arc::default(),
    };
    let sent = pool(&up, 1).send(request(&up)).await;
    assert!(matches!(sent, Err(AttemptError::Connect)), "{sent:?}");
}

#[tokio::test]
async fn a_name_is_looked_up_and_a_bracketed_address_unbracketed() {
    let up = upstream(Answer::Keep).await;
    let port = up.authority.port_u16().unwrap();
    for authority in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let named = Upstream {
            authority: authority.parse().unwrap(),
            accepted: up.accepted.clone(),
        };
        let sent = pool(&named, 1).send(request(&named)).await;
        // `[::1]` is refused (the fake listens on IPv4 only): a connect error, not a bad name.
        match sent {
            Ok(r) => assert_eq!(r.status(), 200),
            Err(e) => assert!(
                authority.starts_with('[') && matches!(e, AttemptError::Connect),
                "{authority}: {e:?}"
            ),
        }
    }
}

#[tokio::test]
async fn a_connect_that_hangs_times_out_in_the_connect_phase() {
    // A listener that never accepts, its backlog full: the next handshake gets no answer.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await
        {
            held.push(s);
        }
    }
    let up = Upstream {
        authority: addr.to_string().parse().unwrap(),
        accepted: Arc::default(),
    };
    let pool = Arc::new(HostPool::new(
        up.authority.clone(),
        Duration::from_millis(200),
        1,
    ));
    let started = Instant::now();
    let sent = pool.send(request(&up)).await;
    assert!(
        matches!(sent, Err(AttemptError::Timeout(Phase::Connect))),
        "{sent:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
