//! The nesting depth of a JSON body, checked before any parsing, so that fields passed through
//! as raw JSON cannot carry a structure that breaks a backend's parser.

use super::RequestError;

/// Refuses JSON that nests deeper than `max` (400, code `too_deep`).
pub(crate) fn check_depth(body: &[u8], max: usize) -> Result<(), RequestError> {
    if too_deep(body, max) {
        return Err(RequestError::Invalid {
            message: format!("the body nests deeper than {max} levels"),
            param: None,
            code: "too_deep",
        });
    }
    Ok(())
}

/// How many `[` and `{` the bytes hold, in or out of strings. Counted in bytes, 255 at a time
/// (no count can overflow), which the compiler turns into wide vector adds; a `usize` count
/// (`filter().count()`) took ~2.5 instructions a byte.
fn opening_brackets(body: &[u8]) -> usize {
    body.chunks(255)
        .map(|c| {
            let n = c
                .iter()
                .fold(0u8, |n, &b| n + u8::from(b == b'[' || b == b'{'));
            usize::from(n)
        })
        .sum()
}

/// Whether JSON nests deeper than `max`, in one pass over the bytes.
pub(crate) fn too_deep(body: &[u8], max: usize) -> bool {
    // Depth cannot pass the number of opening brackets: counting them is a vectorised pass,
    // several times cheaper than the scan below, and settles every body of modest size.
    if opening_brackets(body) <= max {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_are_counted_past_a_byte_s_range() {
        assert_eq!(opening_brackets(&[b'['; 1000]), 1000);
        assert_eq!(opening_brackets(&[b'{'; 255]), 255);
        let mixed: Vec<u8> = b"{[x]}\"a\"".repeat(300);
        assert_eq!(opening_brackets(&mixed), 600);
        assert_eq!(opening_brackets(b""), 0);
    }

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        assert!(!too_deep(br#"{"a":"[[[[[[[[[[[[","b":[[1]]}"#, 3));
        assert!(too_deep(br#"{"a":[[[1]]]}"#, 3));
        assert!(!too_deep(br#"{"a":"\"[[[["}"#, 2));
        // More brackets than the limit, in strings and side by side: the scan decides.
        assert!(!too_deep(br#"{"a":[1],"b":[2],"c":{"d":[3]}}"#, 3));
        assert!(!too_deep(br#"{"a":"{{{{{{"}"#, 3));
    }
}
