//! ⑤ The gateway's own picture of an answer, between an upstream dialect and the client's
//! format: a whole [`Completion`], or a stream of [`Piece`]s. Upstream adapters produce it;
//! the client-side encoders (OpenAI chunks, Anthropic events) consume it.

use serde::Serialize;

use crate::exchange::Usage;

/// Why the model stopped, in OpenAI's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    /// Stopped at one of the request's stop sequences (OpenAI says `stop`).
    StopSequence,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopSequence => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    /// OpenAI's `finish_reason` string, read leniently.
    pub(crate) fn from_openai(s: &str) -> FinishReason {
        match s {
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Stop,
        }
    }
}

/// A tool call of a whole answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ToolCall {
    pub(crate) id: String,
    pub(crate) name: String,
    /// The arguments as a JSON string, as OpenAI carries them.
    pub(crate) arguments: String,
}

/// One of a whole answer's choices (OpenAI's `n`; Gemini's candidates).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Choice {
    pub(crate) text: Option<String>,
    pub(crate) tool_calls: Vec<ToolCall>,
    pub(crate) finish: FinishReason,
    /// The stop sequence that ended the answer, when the upstream says which.
    pub(crate) stop_sequence: Option<String>,
}

impl Choice {
    /// A choice of text only.
    pub(crate) fn text(text: Option<String>, finish: FinishReason) -> Choice {
        Choice {
            text,
            tool_calls: Vec::new(),
            finish,
            stop_sequence: None,
        }
    }
}

/// What an answer with no choice at all shows (adapters always make one; this keeps the
/// encoders total).
static NO_CHOICE: Choice = Choice {
    text: None,
    tool_calls: Vec::new(),
    finish: FinishReason::Stop,
    stop_sequence: None,
};

/// A whole answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Completion {
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
    /// In index order, at least one.
    pub(crate) choices: Vec<Choice>,
    pub(crate) usage: Usage,
}

impl Completion {
    /// The first choice: all an Anthropic-format client can ask for.
    pub(crate) fn first(&self) -> &Choice {
        self.choices.first().unwrap_or(&NO_CHOICE)
    }
}

/// One step of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece<'a> {
    /// The answer begins.
    Start { id: &'a str, model: &'a str },
    /// The pieces that follow belong to choice `n` (0 until one of these says otherwise).
    /// Only upstreams that answer several choices in one stream (Gemini's candidates) send it.
    Choice(u32),
    /// More text.
    Text(&'a str),
    /// A tool call begins (`id` and `name` set) or its arguments continue. `index` counts tool
    /// calls only, from 0.
    ToolCall {
        index: u32,
        id: Option<&'a str>,
        name: Option<&'a str>,
        arguments: &'a str,
    },
    /// The stop sequence the model stopped at (before its `Finish`).
    StopSequence(&'a str),
    /// The model stopped.
    Finish(FinishReason),
    /// Token counts so far (the last one wins).
    Usage(Usage),
}

impl Piece<'_> {
    /// Whether it belongs to the current choice (what a one-choice format drops of the others).
    pub(crate) fn of_a_choice(&self) -> bool {
        matches!(
            self,
            Piece::Text(_) | Piece::ToolCall { .. } | Piece::StopSequence(_) | Piece::Finish(_)
        )
    }
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// The upstream finished and the client got the format's clean end.
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
    /// The stream ran past its backstop duration.
    TooLong,
    /// The gateway's drain deadline passed.
    Shutdown,
    /// The client went away before the end.
    ClientGone,
}

impl EndReason {
    /// Whether the upstream is to blame (it counts towards the deployment's ejection).
    pub(crate) fn is_upstream_fault(self) -> bool {
        matches!(
            self,
            EndReason::UpstreamCut
                | EndReason::UpstreamError
                | EndReason::InbandError
                | EndReason::InvalidUpstream
                | EndReason::IdleTimeout
        )
    }

    pub(crate) const ALL: [EndReason; 9] = [
        EndReason::Completed,
        EndReason::UpstreamCut,
        EndReason::UpstreamError,
        EndReason::InbandError,
        EndReason::InvalidUpstream,
        EndReason::IdleTimeout,
        EndReason::TooLong,
        EndReason::Shutdown,
        EndReason::ClientGone,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::UpstreamCut => "upstream_cut",
            EndReason::UpstreamError => "upstream_error",
            EndReason::InbandError => "inband_error",
            EndReason::InvalidUpstream => "invalid_upstream",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::TooLong => "too_long",
            EndReason::Shutdown => "shutdown",
            EndReason::ClientGone => "client_gone",
        }
    }
}
