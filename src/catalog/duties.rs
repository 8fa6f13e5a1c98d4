//! What a license obliges its licensee to do ([`DutySpec`]), checked at load, and the notice
//! answers carry: the texts of the duties that serving the model brings on, made into the
//! `x-modelgate-license-notice` header value once, when the catalog is built.

use http::HeaderValue;

use super::spec::{DutyKind, DutySpec, Trigger};

/// What joins the texts of several duties in one header value.
pub(crate) const SEPARATOR: &str = " | ";

/// Why a duty cannot be taken as written (none when it can).
pub(crate) fn check(d: &DutySpec) -> Option<String> {
    if d.source.trim().is_empty() {
        return Some("a duty says where it comes from: 'source' is required".into());
    }
    if d.when.is_empty() {
        return Some("'when' needs at least one of use, serve, redistribute, train".into());
    }
    let blank = |s: &Option<String>| s.as_deref().is_none_or(|t| t.trim().is_empty());
    let needs_text = matches!(
        d.kind,
        DutyKind::Display | DutyKind::Notice | DutyKind::FlowDown
    );
    if needs_text && blank(&d.text) {
        return Some(format!("a '{}' duty needs its 'text'", d.kind.as_str()));
    }
    if matches!(d.kind, DutyKind::UsePolicy | DutyKind::LicenseCopy) && blank(&d.url) {
        return Some(format!("a '{}' duty needs its 'url'", d.kind.as_str()));
    }
    if d.when.contains(&Trigger::Serve)
        && let Some(text) = &d.text
        && let Err(c) = header_text(text)
    {
        return Some(format!(
            "its text goes on answers as a header, which carries visible ASCII only: '{}' (U+{:04X}) has no ASCII form; write it in ASCII",
            c.escape_default(),
            u32::from(c)
        ));
    }
    None
}

/// The notice answers carry for these duties: the texts of those that serving brings on, in
/// ASCII, joined by [`SEPARATOR`]; none when serving brings no text on (or a text cannot be
/// carried, which [`check`] reports).
pub(crate) fn answer_notice(duties: &[DutySpec]) -> Option<(String, HeaderValue)> {
    let texts: Vec<String> = duties
        .iter()
        .filter(|d| d.when.contains(&Trigger::Serve))
        .filter_map(|d| d.text.as_deref())
        .map(header_text)
        .collect::<Result<_, _>>()
        .ok()?;
    if texts.is_empty() {
        return None;
    }
    let text = texts.join(SEPARATOR);
    let value = HeaderValue::from_str(&text).ok()?;
    Some((text, value))
}

/// `text` as a header carries it: visible ASCII and spaces, the typographic characters license
/// texts use written the ASCII way (`©` as `(c)`, curly quotes straight, dashes as `-`), runs of
/// white space as one space. The first character with no ASCII form is the error.
pub(crate) fn header_text(text: &str) -> Result<String, char> {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        let ascii = match c {
            c if c.is_whitespace() => " ",
            '!'..='~' => {
                out.push(c);
                continue;
            }
            '©' => "(c)",
            '®' => "(R)",
            '™' => "(TM)",
            '‘' | '’' | '′' => "'",
            '“' | '”' | '″' => "\"",
            '–' | '—' | '‐' | '‑' => "-",
            '…' => "...",
            _ => return Err(c),
        };
        if ascii == " " && out.ends_with(' ') {
            continue;
        }
        out.push_str(ascii);
    }
    Ok(out)
}

impl DutyKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DutyKind::Display => "display",
            DutyKind::Notice => "notice",
            DutyKind::LicenseCopy => "license_copy",
            DutyKind::Attribution => "attribution",
            DutyKind::UsePolicy => "use_policy",
            DutyKind::FlowDown => "flow_down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duty(kind: DutyKind, when: &[Trigger], text: Option<&str>, url: Option<&str>) -> DutySpec {
        DutySpec {
            kind,
            when: when.to_vec(),
            text: text.map(str::to_owned),
            verbatim: true,
            url: url.map(str::to_owned),
            source: "a clause".into(),
        }
    }

    #[test]
    fn license_typography_is_written_the_ascii_way() {
        assert_eq!(
            header_text(
                "Llama 3.1 is licensed under the Llama 3.1 Community License, Copyright © Meta Platforms, Inc. All Rights Reserved."
            )
            .unwrap(),
            "Llama 3.1 is licensed under the Llama 3.1 Community License, Copyright (c) Meta Platforms, Inc. All Rights Reserved."
        );
        assert_eq!(
            header_text("  “Built with Llama” —\tMeta’s\n\n mark™ ").unwrap(),
            "\"Built with Llama\" - Meta's mark(TM)"
        );
        // Nothing else is guessed at: a character with no ASCII form is refused, not dropped.
        assert_eq!(header_text("Qwen 通义千问"), Err('通'));
        assert_eq!(header_text("a\u{0}b"), Err('\u{0}'));
    }

    #[test]
    fn answers_carry_the_texts_serving_brings_on() {
        let duties = [
            duty(
                DutyKind::Display,
                &[Trigger::Serve, Trigger::Redistribute],
                Some("Built with Llama"),
                None,
            ),
            duty(
                DutyKind::Notice,
                &[Trigger::Redistribute],
                Some("Llama is licensed … ©"),
                None,
            ),
            duty(
                DutyKind::UsePolicy,
                &[Trigger::Use],
                None,
                Some("https://x"),
            ),
        ];
        let (text, value) = answer_notice(&duties).unwrap();
        assert_eq!(text, "Built with Llama");
        assert_eq!(value, "Built with Llama");
        let two = [
            duty(
                DutyKind::FlowDown,
                &[Trigger::Serve],
                Some("Restricted."),
                None,
            ),
            duty(
                DutyKind::Display,
                &[Trigger::Serve],
                Some("Built with ©"),
                None,
            ),
        ];
        assert_eq!(
            answer_notice(&two).unwrap().1,
            "Restricted. | Built with (c)"
        );
        // Duties of redistribution and use alone put nothing on answers.
        assert!(answer_notice(&duties[1..]).is_none());
        assert!(answer_notice(&[]).is_none());
    }

    #[test]
    fn a_duty_needs_its_source_trigger_text_or_url() {
        let ok = duty(DutyKind::Display, &[Trigger::Serve], Some("Built"), None);
        assert_eq!(check(&ok), None);
        let mut d = ok.clone();
        d.source = " ".into();
        assert!(check(&d).unwrap().contains("source"));
        let mut d = ok.clone();
        d.when.clear();
        assert!(check(&d).unwrap().contains("when"));
        let d = duty(
            DutyKind::FlowDown,
            &[Trigger::Serve],
            None,
            Some("https://x"),
        );
        assert!(
            check(&d)
                .unwrap()
                .contains("'flow_down' duty needs its 'text'")
        );
        let d = duty(DutyKind::UsePolicy, &[Trigger::Use], None, None);
        assert!(
            check(&d)
                .unwrap()
                .contains("'use_policy' duty needs its 'url'")
        );
        let d = duty(DutyKind::Attribution, &[Trigger::Redistribute], None, None);
        assert_eq!(check(&d), None);
        // A text that goes on answers must have an ASCII form; one kept with copies need not.
        let d = duty(DutyKind::Display, &[Trigger::Serve], Some("通义千问"), None);
        assert!(check(&d).unwrap().contains("U+901A"), "{:?}", check(&d));
        let d = duty(
            DutyKind::Notice,
            &[Trigger::Redistribute],
            Some("通义千问"),
            None,
        );
        assert_eq!(check(&d), None);
    }
}
