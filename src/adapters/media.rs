//! ⑤ Images in requests: `data:` URLs split into media type and base64 data, for dialects that
//! carry images inline.

/// `data:image/png;base64,AAAA` → `("image/png", "AAAA")`.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((
        if media.is_empty() {
            "application/octet-stream"
        } else {
            media
        },
        data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        assert_eq!(
            data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
        assert_eq!(
            data_url("data:;base64,AA"),
            Some(("application/octet-stream", "AA"))
        );
        assert_eq!(data_url("data:text/plain,hello"), None);
        assert_eq!(data_url("https://x/a.png"), None);
    }
}
