//! ⑦ Each deployment's own series, resolved once per snapshot and kept by the deployment's
//! index: an answered request touches them without hashing its labels again.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{Histogram, HistogramVec, IntCounter};

use super::{Metrics, model_labels};
use crate::config::Deployment;
use crate::exchange::Usage;
use crate::exchange::answer::EndReason;
use crate::policy::EndpointName;

/// `modelgate_request_duration_seconds`' series, by endpoint and whether the answer streamed:
/// eight, known at start, so no request hashes their labels.
pub(crate) struct Durations([[Histogram; 2]; 4]);

const DURATION_ENDPOINTS: [EndpointName; 4] = [
    EndpointName::ChatCompletions,
    EndpointName::Messages,
    EndpointName::Embeddings,
    EndpointName::Responses,
];

impl Durations {
    pub(super) fn of(family: &HistogramVec) -> Durations {
        Durations(DURATION_ENDPOINTS.map(|e| {
            ["false", "true"].map(|stream| family.with_label_values(&[e.as_str(), stream]))
        }))
    }

    pub(crate) fn get(&self, endpoint: EndpointName, stream: bool) -> &Histogram {
        // The order of DURATION_ENDPOINTS.
        let i = match endpoint {
            EndpointName::ChatCompletions => 0,
            EndpointName::Messages => 1,
            EndpointName::Embeddings => 2,
            EndpointName::Responses => 3,
        };
        &self.0[i][usize::from(stream)]
    }
}

impl Metrics {
    /// A deployment's series for an operation, resolved once per deployment (labels hashed
    /// and looked up at the first request, not at every one).
    pub(crate) fn series<'a>(
        &self,
        table: &'a SeriesTable,
        d: &Deployment,
        operation: &str,
    ) -> Cow<'a, Series> {
        let slot = match (table.0.get(d.index), operation) {
            (Some([chat, _]), "chat") => chat,
            (Some([_, embeddings]), "embeddings") => embeddings,
            _ => return Cow::Owned(self.resolve(d, operation)),
        };
        let s = slot.get_or_init(|| self.resolve(d, operation));
        if s.owner == self.id {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(self.resolve(d, operation))
        }
    }

    /// The attempt that answered a request.
    pub(crate) fn answered(&self, table: &SeriesTable, d: &Deployment, operation: &str) {
        self.series(table, d, operation).attempts_ok.inc();
    }

    fn resolve(&self, d: &Deployment, operation: &str) -> Series {
        let labels = model_labels(d, "");
        let [_, provider, model, openness, license, _] = labels;
        let genai_tokens = |kind| {
            self.model
                .genai_tokens
                .with_label_values(&[operation, provider, model, kind, openness, license])
        };
        Series {
            owner: self.id,
            attempts_ok: self
                .model
                .upstream_attempts
                .with_label_values(&model_labels(d, "ok")),
            tokens_in: self
                .model
                .tokens
                .with_label_values(&model_labels(d, "input")),
            tokens_out: self
                .model
                .tokens
                .with_label_values(&model_labels(d, "output")),
            cost: self.model.cost.with_label_values(&labels[..5]),
            genai_tokens_in: genai_tokens("input"),
            genai_tokens_out: genai_tokens("output"),
            genai_duration: self
                .model
                .genai_duration
                .with_label_values(&[operation, provider, model, openness, license]),
            stream: (operation == "chat").then(|| StreamSeries {
                ttft: self.model.ttft.with_label_values(&labels[..5]),
                ends: EndReason::ALL.map(|reason| {
                    self.model
                        .stream_ends
                        .with_label_values(&model_labels(d, reason.as_str()))
                }),
            }),
        }
    }

    /// Tokens, cost (0 included, so every class shows) and duration of one answered request.
    pub(crate) fn usage(&self, table: &SeriesTable, d: &Deployment, answered: Answered) {
        let Answered {
            operation,
            usage: u,
            cost,
            took,
        } = answered;
        let s = self.series(table, d, operation);
        s.tokens_in.inc_by(u.prompt_tokens);
        s.tokens_out.inc_by(u.completion_tokens);
        if cost >= 0.0 && cost.is_finite() {
            s.cost.inc_by(cost);
        }
        s.genai_tokens_in.observe(u.prompt_tokens as f64);
        s.genai_tokens_out.observe(u.completion_tokens as f64);
        s.genai_duration.observe(took.as_secs_f64());
    }
}

/// What one answered request used and cost.
pub(crate) struct Answered<'a> {
    pub(crate) operation: &'a str,
    pub(crate) usage: &'a Usage,
    pub(crate) cost: f64,
    pub(crate) took: Duration,
}

/// Each deployment's series of one snapshot, by its index: resolved on first use, per
/// operation (chat, embeddings).
#[derive(Debug)]
pub(crate) struct SeriesTable(Box<[[OnceLock<Series>; 2]]>);

impl SeriesTable {
    pub(crate) fn new(snapshot: &crate::config::Snapshot) -> SeriesTable {
        SeriesTable(
            snapshot
                .deployments
                .iter()
                .map(|_| Default::default())
                .collect(),
        )
    }
}

/// The series every answered request of one deployment and operation touches (a series is
/// created by its first lookup, so only those: the rest stay absent until used).
#[derive(Clone, Debug)]
pub(crate) struct Series {
    owner: usize,
    pub(crate) attempts_ok: prometheus::IntCounter,
    pub(crate) tokens_in: prometheus::IntCounter,
    pub(crate) tokens_out: prometheus::IntCounter,
    pub(crate) cost: prometheus::Counter,
    pub(crate) genai_tokens_in: Histogram,
    pub(crate) genai_tokens_out: Histogram,
    pub(crate) genai_duration: Histogram,
    /// Chat only: a stream's series, looked up once here rather than as each stream commits
    /// (on its way to the first token) and ends.
    pub(crate) stream: Option<StreamSeries>,
}

/// The series of one deployment's streams.
#[derive(Clone, Debug)]
pub(crate) struct StreamSeries {
    /// `modelgate_time_to_first_token_seconds`.
    pub(crate) ttft: Histogram,
    /// `modelgate_stream_ends_total`, in the order of [`EndReason::ALL`].
    ends: [IntCounter; EndReason::ALL.len()],
}

impl StreamSeries {
    /// The count of streams that ended for `reason`.
    pub(crate) fn ended(&self, reason: EndReason) -> &IntCounter {
        // `ALL` lists the reasons in their declaration order (a test holds it to that).
        &self.ends[reason as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_series_are_the_ones_its_labels_name() {
        for (i, reason) in EndReason::ALL.into_iter().enumerate() {
            assert_eq!(
                reason as usize, i,
                "EndReason::ALL out of order at {reason:?}"
            );
        }
        let m = Metrics::new().unwrap();
        let yaml = "deployments:\n  - {name: a, kind: echo, model: echo}\n";
        let env = std::collections::HashMap::<String, String>::new();
        let loaded = crate::config::load::load_texts(yaml, &[], &[], &env).unwrap();
        let snapshot = crate::config::Snapshot::build(
            std::sync::Arc::new(loaded.config),
            &crate::config::Discovered::default(),
        );
        let table = SeriesTable::new(&snapshot);
        let d = &snapshot.deployments[0];
        let s = m.series(&table, d, "chat");
        let stream = s.stream.as_ref().unwrap();
        for (n, reason) in EndReason::ALL.into_iter().enumerate() {
            stream.ended(reason).inc_by(n as u64 + 1);
        }
        stream.ttft.observe(0.25);
        for (n, reason) in EndReason::ALL.into_iter().enumerate() {
            let counted = m
                .model
                .stream_ends
                .with_label_values(&model_labels(d, reason.as_str()))
                .get();
            assert_eq!(counted, n as u64 + 1, "{reason:?}");
        }
        let ttft = m.model.ttft.with_label_values(&model_labels(d, "")[..5]);
        assert_eq!(ttft.get_sample_count(), 1);
        assert!(m.series(&table, d, "embeddings").stream.is_none());
    }

    #[test]
    fn each_duration_is_the_series_its_labels_name() {
        let m = Metrics::new().unwrap();
        for (n, e) in DURATION_ENDPOINTS.into_iter().enumerate() {
            for stream in [false, true] {
                for _ in 0..=n {
                    m.durations.get(e, stream).observe(0.1);
                }
                let labels = [e.as_str(), if stream { "true" } else { "false" }];
                let count = m
                    .request_duration
                    .with_label_values(&labels)
                    .get_sample_count();
                assert_eq!(count, n as u64 + 1, "{labels:?}");
            }
        }
    }
}
