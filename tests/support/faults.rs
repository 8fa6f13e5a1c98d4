//! Faults the fake upstream can inject, as `reliability.md` §5.1 lists them: resets before the
//! headers or mid-stream, cuts, in-band errors, slow first tokens, stalls, huge lines,
//! never-ending streams, redirects. And the record of every connection it accepted.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{BoxError, FakeBody};

/// How a scripted stream ends after its chunks.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// The finish chunk, the usage chunk and `[DONE]`.
    Done,
    /// The connection closes (FIN) in the middle of the chunked body.
    Cut,
    /// The connection is reset (RST).
    Reset,
    /// An OpenAI-style error event, then the body ends.
    InbandError,
    /// Nothing more, with the connection left open.
    Stall,
    /// An SSE line of this many bytes.
    HugeLine(usize),
}

/// A connection the fake accepted.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    pub opened: Instant,
    pub closed: Option<Instant>,
}

/// The connections of one fake, in order of acceptance.
pub type Connections = Arc<Mutex<Vec<Connection>>>;

/// A TCP stream that records when it closes, and closes with a reset when asked to.
pub struct Conn {
    stream: TcpStream,
    pub reset: Arc<AtomicBool>,
    log: Connections,
    index: usize,
}

impl Conn {
    pub fn new(stream: TcpStream, log: Connections) -> Conn {
        let mut l = log.lock().unwrap();
        let index = l.len();
        l.push(Connection {
            opened: Instant::now(),
            closed: None,
        });
        drop(l);
        Conn {
            stream,
            reset: Arc::new(AtomicBool::new(false)),
            log,
            index,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // SO_LINGER 0: close sends RST instead of FIN.
            let _ = self.stream.set_zero_linger();
        }
        self.log.lock().unwrap()[self.index].closed = Some(Instant::now());
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The text of chunk `i` of a scripted stream.
pub fn word(i: usize) -> String {
    format!("w{i} ")
}

fn chunk(model: &str, i: usize) -> String {
    let delta = if i == 0 {
        json!({"role": "assistant", "content": word(0)})
    } else {
        json!({"content": word(i)})
    };
    json!({"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}], "usage": null})
    .to_string()
}

fn data(s: &str) -> Bytes {
    Bytes::from(format!("data: {s}\n\n"))
}

/// A stream of `chunks` content chunks (`w0 w1 …`), the first after `first` and the others
/// every `every`, then `end`; with `forever` it never ends, and `chunks` is the padding of each
/// chunk's content instead.
pub fn stream(
    model: &str,
    first: Duration,
    every: Duration,
    chunks: usize,
    end: End,
    forever: bool,
    reset: Arc<AtomicBool>,
) -> Response<FakeBody> {
    let model = model.to_owned();
    let body = futures_util::stream::unfold(0usize, move |i| {
        let (model, end, reset) = (model.clone(), end.clone(), reset.clone());
        async move {
            tokio::time::sleep(if i == 0 { first } else { every }).await;
            if forever {
                let mut c = chunk(&model, i);
                if chunks > 0 {
                    c = c.replacen(&word(i), &format!("{}{}", word(i), " ".repeat(chunks)), 1);
                }
                return Some((Ok(Frame::data(data(&c))), i + 1));
            }
            if i < chunks {
                return Some((Ok(Frame::data(data(&chunk(&model, i)))), i + 1));
            }
            if i > chunks {
                return None;
            }
            let last: Result<Frame<Bytes>, BoxError> = match end {
                End::Done => {
                    let finish = json!({"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                        "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}], "usage": null});
                    let usage = json!({"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                        "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": chunks, "total_tokens": 11 + chunks}});
                    let mut b = Vec::new();
                    b.extend_from_slice(&data(&finish.to_string()));
                    b.extend_from_slice(&data(&usage.to_string()));
                    b.extend_from_slice(&data("[DONE]"));
                    Ok(Frame::data(Bytes::from(b)))
                }
                End::Cut => Err("cut".into()),
                End::Reset => {
                    reset.store(true, Ordering::Relaxed);
                    Err("reset".into())
                }
                End::InbandError => Ok(Frame::data(data(
                    &json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}})
                        .to_string(),
                ))),
                End::Stall => {
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                End::HugeLine(n) => Ok(Frame::data(data(&"x".repeat(n)))),
            };
            Some((last, i + 1))
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(body)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

/// A completion with no `choices`, as a broken backend might send.
pub fn missing_fields(model: &str) -> Value {
    json!({"id": "chatcmpl-fault", "object": "chat.completion", "created": 1_700_000_000, "model": model})
}
