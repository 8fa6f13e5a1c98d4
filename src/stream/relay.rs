//! ⑦ Relay an upstream stream to the client, chunk by chunk, as it arrives: decode SSE,
//! translate each event, and write what the client should see. Nothing is buffered beyond the
//! chunk at hand, so a client that stops reading slows the upstream read through TCP.
//!
//! A stream that ends without its terminator, stalls past the idle timeout, sends an in-band
//! error or breaks the decoder's limits ends with an OpenAI error event and no `[DONE]`, so the
//! client can tell the answer is incomplete. Dropping the relay (the client left) drops the
//! upstream response, which closes the upstream connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body::Frame;
use tokio::time::Sleep;

use super::encode::{Encoder, End};
use super::sse::{SseDecoder, SseEvent};
use crate::adapters::{Flow, StreamTranslator};
use crate::api::{ErrorBody, ErrorType, Usage};

/// The upstream body as a stream of chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The upstream finished and the client got `[DONE]`.
    Completed,
    /// The upstream closed the stream before its end.
    UpstreamCut,
    /// The upstream connection failed mid-stream.
    UpstreamError,
    /// The upstream reported an error inside the stream.
    InbandError,
    /// The upstream sent something the decoder or translator could not accept.
    InvalidUpstream,
    /// No chunk for longer than the idle timeout.
    IdleTimeout,
    /// The gateway's drain deadline passed.
    Shutdown,
    /// The client went away before the end.
    ClientGone,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::UpstreamCut => "upstream_cut",
            EndReason::UpstreamError => "upstream_error",
            EndReason::InbandError => "inband_error",
            EndReason::InvalidUpstream => "invalid_upstream",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::ClientGone => "client_gone",
        }
    }
}

/// What is known when a stream ends, for accounting and metrics.
#[derive(Clone, Copy, Debug)]
pub struct StreamEnd {
    pub reason: EndReason,
    pub usage: Option<Usage>,
    pub output_chars: usize,
    pub time_to_first_byte: Option<Duration>,
    pub duration: Duration,
}

/// Called once when the stream ends, however it ends.
pub type OnEnd = Box<dyn FnOnce(StreamEnd) + Send>;

/// A future that completes when the gateway's drain deadline has passed.
pub type Deadline = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Relay {
    upstream: ByteStream,
    decoder: SseDecoder,
    translator: Box<dyn StreamTranslator>,
    encoder: Box<dyn Encoder>,
    events: Vec<SseEvent>,
    out: BytesMut,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Option<Deadline>,
    started: Instant,
    first_byte: Option<Duration>,
    /// Frames made before the relay started (a pre-read first chunk), sent first.
    pending: Option<Bytes>,
    finished: bool,
    on_end: Option<OnEnd>,
}

impl Relay {
    pub fn new(
        upstream: ByteStream,
        translator: Box<dyn StreamTranslator>,
        encoder: Box<dyn Encoder>,
        max_line: usize,
        idle: Duration,
        deadline: Option<Deadline>,
        on_end: OnEnd,
    ) -> Relay {
        Relay {
            upstream,
            decoder: SseDecoder::new(max_line),
            translator,
            encoder,
            events: Vec::new(),
            out: BytesMut::new(),
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            deadline,
            started: Instant::now(),
            first_byte: None,
            pending: None,
            finished: false,
            on_end: Some(on_end),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished && self.pending.is_none()
    }

    /// Ends the stream: `[DONE]` when complete, else an error event.
    fn finish(&mut self, reason: EndReason, error: Option<ErrorBody>) -> Bytes {
        if let Some(body) = error {
            self.encoder.error(&body, &mut self.out);
        } else if reason == EndReason::Completed {
            let end = End {
                usage: self.translator.usage(),
                usage_relayed: self.translator.usage_relayed(),
                output_chars: self.translator.output_chars(),
            };
            self.encoder.done(end, &mut self.out);
        }
        self.finished = true;
        self.report(reason);
        self.out.split().freeze()
    }

    fn report(&mut self, reason: EndReason) {
        if let Some(on_end) = self.on_end.take() {
            on_end(StreamEnd {
                reason,
                usage: self.translator.usage(),
                output_chars: self.translator.output_chars(),
                time_to_first_byte: self.first_byte,
                duration: self.started.elapsed(),
            });
        }
    }

    /// Translates the events decoded so far. `Some` when the stream is over.
    fn translate(&mut self) -> Option<(EndReason, Option<ErrorBody>)> {
        let mut end = None;
        for ev in self.events.drain(..) {
            if end.is_some() {
                continue;
            }
            match self
                .translator
                .event(&ev, self.encoder.as_mut(), &mut self.out)
            {
                Ok(Flow::More) => {}
                Ok(Flow::Done) => end = Some((EndReason::Completed, None)),
                Err(fault) => end = Some((EndReason::InbandError, Some(fault.body))),
            }
        }
        end
    }

    pub fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let this = &mut *self;
        if let Some(b) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if this.first_byte.is_none() {
                        this.first_byte = Some(this.started.elapsed());
                    }
                    if let Err(e) = this.decoder.feed(&chunk, &mut this.events) {
                        let body = ErrorBody::new(ErrorType::ApiError, e.to_string())
                            .code("upstream_invalid_response");
                        let b = this.finish(EndReason::InvalidUpstream, Some(body));
                        return Poll::Ready(Some(Ok(Frame::data(b))));
                    }
                    if let Some((reason, err)) = this.translate() {
                        let b = this.finish(reason, err);
                        return Poll::Ready(Some(Ok(Frame::data(b))));
                    }
                    if !this.out.is_empty() {
                        this.idle_timer
                            .as_mut()
                            .reset(tokio::time::Instant::now() + this.idle);
                        return Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))));
                    }
                    // A chunk with no complete event yet (or only comments): still alive.
                    this.idle_timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(Some(Err(_))) => {
                    let body = ErrorBody::new(
                        ErrorType::ApiError,
                        "the upstream connection failed in the middle of the stream",
                    )
                    .code("upstream_stream_error");
                    let b = this.finish(EndReason::UpstreamError, Some(body));
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Poll::Ready(None) => {
                    // Some servers end the body right after the last event without a blank
                    // line; a trailing `[DONE]` still counts.
                    this.decoder.finish(&mut this.events);
                    if let Some((reason, err)) = this.translate() {
                        let b = this.finish(reason, err);
                        return Poll::Ready(Some(Ok(Frame::data(b))));
                    }
                    match this
                        .translator
                        .end_of_stream(this.encoder.as_mut(), &mut this.out)
                    {
                        Ok(Flow::Done) => {
                            let b = this.finish(EndReason::Completed, None);
                            return Poll::Ready(Some(Ok(Frame::data(b))));
                        }
                        Err(fault) => {
                            let b = this.finish(EndReason::InbandError, Some(fault.body));
                            return Poll::Ready(Some(Ok(Frame::data(b))));
                        }
                        Ok(Flow::More) => {}
                    }
                    let body = ErrorBody::new(
                        ErrorType::ApiError,
                        "the upstream closed the stream before the answer was complete",
                    )
                    .code("upstream_stream_cut");
                    let b = this.finish(EndReason::UpstreamCut, Some(body));
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Poll::Pending => break,
            }
        }
        if let Some(d) = this.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            let body = ErrorBody::new(
                ErrorType::ServerError,
                "the gateway shut down before the answer was complete",
            )
            .code("server_shutting_down");
            let b = this.finish(EndReason::Shutdown, Some(body));
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if this.idle_timer.as_mut().poll(cx).is_ready() {
            let body = ErrorBody::new(
                ErrorType::ApiError,
                format!(
                    "the upstream sent nothing for {} s; the stream was ended",
                    this.idle.as_secs()
                ),
            )
            .code("upstream_idle_timeout");
            let b = this.finish(EndReason::IdleTimeout, Some(body));
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        Poll::Pending
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Still open when dropped: the client went away.
        self.report(EndReason::ClientGone);
    }
}
