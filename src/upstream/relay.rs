//! ⑦ Relay an upstream stream to the client, chunk by chunk, as it arrives: decode SSE,
//! translate each event, and write what the client should see. Nothing is buffered beyond the
//! chunk at hand, so a client that stops reading slows the upstream read through TCP.
//!
//! Before the first content (the commit point) the stream is `prime`d by the upstream layer: a
//! failure there is an attempt's failure, and the request can go to the next deployment. After
//! it, a stream that ends without its terminator, stalls past the idle timeout, sends an in-band
//! error or breaks the decoder's limits ends with an error event and no clean end, so the client
//! can tell the answer is incomplete. Dropping the relay (the client left) drops the upstream
//! response, which closes the upstream connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::Frame;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::adapters::sanitize::clean;
use crate::adapters::{Flow, StreamTranslator};
use crate::config::secret::Masks;
use crate::exchange::answer::EndReason;
use crate::exchange::encode::{Encoder, End};
use crate::exchange::sse::{SseDecoder, SseEvent};
use crate::exchange::{ErrorBody, ErrorType, Usage};

pub(crate) use super::client::ByteStream;

/// What is known when a stream ends, for accounting and metrics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamEnd {
    pub(crate) reason: EndReason,
    pub(crate) usage: Option<Usage>,
    pub(crate) output_chars: usize,
}

/// Called once when the stream ends, however it ends.
pub(crate) type OnEnd = Box<dyn FnOnce(StreamEnd) + Send>;

/// Bookkeeping of a stream's start (counters, its end's accounting, its slot): run once its
/// first bytes are on their way to the client, not on the way to them.
pub(crate) type Later = Box<dyn FnOnce(&mut Relay) + Send>;

/// A future that completes when the gateway's drain deadline has passed.
pub(crate) type Deadline = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How priming went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Primed {
    /// The first content (or a complete, empty answer) is ready to send.
    Ready,
    /// No first content within the first-token timeout.
    TimedOut,
    /// The stream failed before its first content.
    Failed(String),
}

/// One step of reading the upstream.
enum Step {
    /// Bytes for the client may be in `out`.
    Progress,
    /// The stream is over.
    End(EndReason, Option<ErrorBody>),
}

/// How much and how long a relay reads: the longest SSE line (and event), the longest pause
/// between chunks, and the longest stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub(crate) max_line: usize,
    pub(crate) idle: Duration,
    pub(crate) backstop: Duration,
}

pub(crate) struct Relay {
    upstream: ByteStream,
    decoder: SseDecoder,
    translator: Box<dyn StreamTranslator>,
    encoder: Box<dyn Encoder>,
    events: Vec<SseEvent>,
    out: BytesMut,
    idle: Duration,
    /// The longest stream, from its answer's head.
    longest: Duration,
    /// When the upstream last sent anything (or its answer's head came).
    last_read: Instant,
    /// When the stream has run too long, whatever it sends.
    backstop: Instant,
    /// Fires at the earlier of the two ends, or before (see [`Relay::poll_timer`]).
    timer: Pin<Box<Sleep>>,
    deadline: Option<Deadline>,
    /// Bytes for the client made before the relay was handed to the response.
    pending: Option<Bytes>,
    finished: bool,
    /// The upstream's body has ended (nothing left to drain).
    upstream_ended: bool,
    end: Option<(EndReason, Option<ErrorBody>)>,
    on_end: Option<OnEnd>,
    /// What [`Relay::later`] was given, not run yet.
    later: Option<Later>,
    /// The relay has yielded once after its first bytes, for them to be written first.
    yielded: bool,
    /// Held for as long as the stream lasts (a concurrency permit).
    held: Option<OwnedSemaphorePermit>,
    /// The deployment's key in every form, masked in any error text passed on.
    masks: Masks,
}

impl Relay {
    /// A relay of the upstream body [`Relay::attach`] gives it.
    pub(crate) fn new(
        translator: Box<dyn StreamTranslator>,
        encoder: Box<dyn Encoder>,
        bounds: Bounds,
        deadline: Option<Deadline>,
        masks: Masks,
    ) -> Relay {
        let now = Instant::now();
        Relay {
            upstream: Box::pin(futures_util::stream::empty()),
            decoder: SseDecoder::new(bounds.max_line),
            translator,
            encoder,
            events: Vec::new(),
            out: BytesMut::new(),
            idle: bounds.idle,
            longest: bounds.backstop,
            last_read: now,
            backstop: now + bounds.backstop,
            timer: Box::pin(tokio::time::sleep_until(
                now + bounds.idle.min(bounds.backstop),
            )),
            deadline,
            pending: None,
            finished: false,
            upstream_ended: false,
            end: None,
            on_end: None,
            later: None,
            yielded: false,
            held: None,
            masks,
        }
    }

    /// The upstream's body to relay: made before it comes, the relay is given it after.
    pub(crate) fn attach(&mut self, upstream: ByteStream) {
        self.upstream = upstream;
        // Both ends count from the answer's head, not from when the relay was made: the timer,
        // set earlier, fires early and is moved then.
        self.last_read = Instant::now();
        self.backstop = self.last_read + self.longest;
    }

    /// What to call when the stream ends.
    pub(crate) fn on_end(&mut self, f: OnEnd) {
        self.on_end = Some(f);
    }

    /// Keeps `permit` until the stream ends (the one held before, if any, goes now).
    pub(crate) fn hold(&mut self, permit: OwnedSemaphorePermit) {
        self.held = Some(permit);
    }

    /// Runs `f` once the first bytes are written out (after what `later` was given before),
    /// or when the relay is dropped before.
    ///
    /// hyper asks the body for more before it writes what it was given: the relay yields
    /// once there (waking itself), so the bytes go out and `f` runs on the next poll. The
    /// client's first token does not wait for counters, locks and boxes.
    pub(crate) fn later(&mut self, f: impl FnOnce(&mut Relay) + Send + 'static) {
        self.later = Some(match self.later.take() {
            None => Box::new(f),
            Some(first) => Box::new(move |r: &mut Relay| {
                first(r);
                f(r);
            }),
        });
    }

    fn run_later(&mut self) {
        if let Some(f) = self.later.take() {
            f(self);
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished && self.pending.is_none()
    }

    /// Reads the upstream until its first content (or its complete end) is ready for the
    /// client, before `limit` fires. Failures before that point are the attempt's.
    pub(crate) async fn prime(&mut self, mut limit: Pin<&mut Sleep>) -> Primed {
        loop {
            if self.translator.committed() {
                self.pending = Some(self.out.split().freeze());
                return Primed::Ready;
            }
            let step = std::future::poll_fn(|cx| {
                if limit.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                self.poll_step(cx).map(Some)
            })
            .await;
            match step {
                None => return Primed::TimedOut,
                Some(Step::Progress) => {}
                Some(Step::End(EndReason::Completed, _)) => {
                    // A complete answer without content: nothing to fall back from.
                    self.close(EndReason::Completed, None);
                    self.pending = Some(self.out.split().freeze());
                    return Primed::Ready;
                }
                Some(Step::End(reason, err)) => {
                    let why = err.map_or_else(|| reason.as_str().to_owned(), |e| e.message);
                    self.finished = true;
                    return Primed::Failed(why);
                }
            }
        }
    }

    /// Writes the end of the stream into `out`: the format's clean end, or an error event.
    fn close(&mut self, reason: EndReason, error: Option<ErrorBody>) {
        if let Some(body) = &error {
            self.encoder.error(body, &mut self.out);
        } else if reason == EndReason::Completed {
            self.drain_upstream();
            let end = End {
                usage: self.translator.usage(),
                usage_relayed: self.translator.usage_relayed(),
                output_chars: self.translator.output_chars(),
            };
            self.encoder.done(end, &mut self.out);
        }
        self.finished = true;
        self.end = Some((reason, error));
    }

    /// After the end marker, the upstream's body usually still has its last bytes in flight
    /// (the chunked encoding's terminator). Dropping it unread would close a connection that
    /// could be reused, and the next stream would pay a new connection (for an API, a TLS
    /// handshake). A task reads what is left, a little and briefly, so it can go back to the
    /// pool; anything more and the connection closes as before.
    fn drain_upstream(&mut self) {
        /// Drains at once, at most: an upstream that holds its body open after the end marker
        /// must not pile up sockets past the streams' own concurrency limit.
        static DRAINS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);
        if self.upstream_ended {
            return;
        }
        let (Ok(rt), Ok(permit)) = (tokio::runtime::Handle::try_current(), DRAINS.try_acquire())
        else {
            return;
        };
        let mut rest =
            std::mem::replace(&mut self.upstream, Box::pin(futures_util::stream::empty()));
        rt.spawn(async move {
            let _permit = permit;
            let read = async {
                let mut left: usize = 64 << 10;
                while let Some(Ok(chunk)) = rest.next().await {
                    left = match left.checked_sub(chunk.len()) {
                        Some(n) => n,
                        None => return,
                    };
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(250), read).await;
        });
    }

    fn report(&mut self, reason: EndReason) {
        if let Some(on_end) = self.on_end.take() {
            on_end(StreamEnd {
                reason,
                usage: self.translator.usage(),
                output_chars: self.translator.output_chars(),
            });
        }
        self.held = None;
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
                Err(fault) => {
                    // The one place an upstream's in-band error text passes through, whatever
                    // the dialect: its message is cleaned here, whole, before anything cuts it.
                    let mut body = fault.body;
                    body.message = clean(&body.message, &self.masks);
                    end = Some((EndReason::InbandError, Some(body)));
                }
            }
        }
        end
    }

    /// Reads and translates what the upstream has; `Pending` when it has nothing yet.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            match self.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.last_read = Instant::now();
                    if let Err(e) = self.decoder.feed_bytes(&chunk, &mut self.events) {
                        let body = ErrorBody::new(ErrorType::ApiError, e.to_string())
                            .code("upstream_invalid_response");
                        return Poll::Ready(Step::End(EndReason::InvalidUpstream, Some(body)));
                    }
                    if let Some((reason, err)) = self.translate() {
                        return Poll::Ready(Step::End(reason, err));
                    }
                    if !self.out.is_empty() {
                        return Poll::Ready(Step::Progress);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    let body = ErrorBody::new(
                        ErrorType::ApiError,
                        "the upstream connection failed in the middle of the stream",
                    )
                    .code("upstream_stream_error");
                    return Poll::Ready(Step::End(EndReason::UpstreamError, Some(body)));
                }
                Poll::Ready(None) => {
                    self.upstream_ended = true;
                    // Some servers end the body right after the last event without a blank
                    // line; a trailing end marker still counts.
                    if let Err(e) = self.decoder.finish(&mut self.events) {
                        let body = ErrorBody::new(ErrorType::ApiError, e.to_string())
                            .code("upstream_invalid_response");
                        return Poll::Ready(Step::End(EndReason::InvalidUpstream, Some(body)));
                    }
                    if let Some((reason, err)) = self.translate() {
                        return Poll::Ready(Step::End(reason, err));
                    }
                    return Poll::Ready(match self.translator.end_of_stream(self.encoder.as_mut(), &mut self.out) {
                        Ok(Flow::Done) => Step::End(EndReason::Completed, None),
                        Err(fault) => {
                            let mut body = fault.body;
                            body.message = clean(&body.message, &self.masks);
                            Step::End(EndReason::InbandError, Some(body))
                        }
                        Ok(Flow::More) => Step::End(
                            EndReason::UpstreamCut,
                            Some(
                                ErrorBody::new(
                                    ErrorType::ApiError,
                                    "the upstream closed the stream before the answer was complete",
                                )
                                .code("upstream_stream_cut"),
                            ),
                        ),
                    });
                }
                Poll::Pending => break,
            }
        }
        if let Some(d) = self.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            let body = ErrorBody::new(
                ErrorType::ServerError,
                "the gateway shut down before the answer was complete",
            )
            .code("server_shutting_down");
            return Poll::Ready(Step::End(EndReason::Shutdown, Some(body)));
        }
        self.poll_timer(cx)
    }

    /// The stream's end if it ran too long or the upstream went quiet too long.
    ///
    /// One timer for both, moved only when it fires early (something came since it was set):
    /// a reset on every chunk would take the timer wheel's lock on the way to the first token,
    /// and each timer registered is that lock again, and once more when it goes.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= self.backstop {
                let body = ErrorBody::new(
                    ErrorType::ApiError,
                    "the stream ran past the longest time allowed",
                )
                .code("stream_too_long");
                return Poll::Ready(Step::End(EndReason::TooLong, Some(body)));
            }
            let quiet = self.last_read + self.idle;
            if now >= quiet {
                let body = ErrorBody::new(
                    ErrorType::ApiError,
                    format!(
                        "the upstream sent nothing for {} s; the stream was ended",
                        self.idle.as_secs()
                    ),
                )
                .code("upstream_idle_timeout");
                return Poll::Ready(Step::End(EndReason::IdleTimeout, Some(body)));
            }
            self.timer.as_mut().reset(quiet.min(self.backstop));
        }
        Poll::Pending
    }

    pub(crate) fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let this = &mut *self;
        if let Some(b) = this.pending.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if this.later.is_some() {
            if !this.yielded && !this.finished {
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.run_later();
        }
        if this.finished {
            if let Some(reason) = this.end.as_ref().map(|(r, _)| *r) {
                this.report(reason);
            }
            return Poll::Ready(None);
        }
        match this.poll_step(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Step::Progress) => {
                Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))))
            }
            Poll::Ready(Step::End(reason, err)) => {
                this.close(reason, err);
                this.report(reason);
                Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))))
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.run_later();
        let reason = self.end.as_ref().map_or(EndReason::ClientGone, |(r, _)| *r);
        self.report(reason);
    }
}

#[cfg(test)]
mod tests;
