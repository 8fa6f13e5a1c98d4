//! ⑦ The response body every route returns: a whole JSON body, a relayed upstream stream, or a
//! few frames made locally. An enum rather than a boxed body: the common case costs nothing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::upstream::relay::Relay;

pub(crate) enum ResponseBody {
    Full(Option<Bytes>),
    Relay(Box<Relay>),
    Frames(VecDeque<Bytes>),
}

impl ResponseBody {
    pub(crate) fn full(b: Bytes) -> ResponseBody {
        ResponseBody::Full(Some(b))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Frames(q) => Poll::Ready(q.pop_front().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Relay(r) => Pin::new(r.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Frames(q) => q.is_empty(),
            ResponseBody::Relay(r) => r.is_finished(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
