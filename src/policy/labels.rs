//! ④ Request labels: `x-modelgate-labels: k=v, k2=v2` and the body's `metadata`. They select
//! rules; they can only narrow what the caller's own rule allows.

use http::HeaderMap;

use crate::exchange::RequestError;
/// The header that carries request labels.
pub(crate) use crate::exchange::headers::LABELS as HEADER;
use crate::exchange::headers::X_LABELS;

/// Most labels a request may carry (header and metadata together).
const MAX_LABELS: usize = 48;
const MAX_LEN: usize = 64;

fn valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
}

/// The labels of a request: the header's, then `metadata` entries the header did not set.
pub(crate) fn collect(
    headers: &HeaderMap,
    metadata: Option<&[(String, String)]>,
) -> Result<Vec<(String, String)>, RequestError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for value in headers.get_all(&X_LABELS) {
        let text = value
            .to_str()
            .map_err(|_| RequestError::invalid(HEADER, "labels must be ASCII"))?;
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(RequestError::invalid(HEADER, "write labels as k=v, k2=v2"));
            };
            let (k, v) = (k.trim(), v.trim());
            if !valid(k) || !valid(v) {
                return Err(RequestError::invalid(
                    HEADER,
                    "label names and values are 1 to 64 characters of letters, digits and _ - . : /",
                ));
            }
            if out.iter().any(|(ok, _)| ok == k) {
                return Err(RequestError::invalid(
                    HEADER,
                    format!("label '{k}' is given twice"),
                ));
            }
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    for (k, v) in metadata.unwrap_or_default() {
        if !out.iter().any(|(ok, _)| ok == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    if out.len() > MAX_LABELS {
        return Err(RequestError::invalid(
            HEADER,
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    Ok(out)
}

/// The labels of a turn: the conversation's, then those the request adds. A label the
/// conversation has keeps its value: a later turn cannot relabel its history.
pub(crate) fn inherit(
    stored: Vec<(String, String)>,
    asked: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut labels = stored;
    for (k, v) in asked {
        if !labels.iter().any(|(sk, _)| *sk == k) {
            labels.push((k, v));
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(HEADER, v.parse().unwrap());
        m
    }

    #[test]
    fn header_and_metadata() {
        let md = vec![
            ("team".to_owned(), "x".to_owned()),
            ("data".to_owned(), "public".to_owned()),
        ];
        let l = collect(&h("data=confidential, purpose = research"), Some(&md)).unwrap();
        assert_eq!(
            l,
            vec![
                ("data".into(), "confidential".into()),
                ("purpose".into(), "research".into()),
                ("team".into(), "x".into())
            ]
        );
        assert!(collect(&h("novalue"), None).is_err());
        assert!(collect(&h("a=b, a=c"), None).is_err());
        assert!(collect(&h("a=b c"), None).is_err());
        assert!(collect(&h(&format!("a={}", "x".repeat(65))), None).is_err());
        assert_eq!(collect(&HeaderMap::new(), None).unwrap(), vec![]);
    }

    #[test]
    fn a_later_turn_cannot_relabel_its_conversation() {
        let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let got = super::inherit(
            l(&[("data", "confidential")]),
            l(&[("data", "public"), ("team", "a")]),
        );
        assert_eq!(got, l(&[("data", "confidential"), ("team", "a")]));
    }
}
