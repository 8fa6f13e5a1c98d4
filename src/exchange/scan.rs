//! Where some top-level fields of a JSON object sit, found in one pass that checks the whole
//! text. An answer that passes through needs only a few of its fields read (`usage`, `model`,
//! whether `choices` and `error` are there). For the load benchmark's answer, serde's derive
//! over the whole body cost 5,400 instructions; this pass, with `usage` read from its span,
//! 4,700. Most of either is per token, not per byte. A stream's chunks are read the same way,
//! down through their choices ([`Scanner::object`], [`Scanner::items`]).
//!
//! It says yes only to what serde_json accepts, and says nothing (`None`) otherwise: not JSON,
//! a field named twice, a name written with escapes, nesting past [`MAX_DEPTH`]. The caller then
//! reads the text with serde_json, which gives the answer, or the error, it always gave.

use std::ops::Range;

/// Deeper than this, serde_json's own limit (128) decides.
const MAX_DEPTH: usize = 100;

/// The byte ranges of the values of `names` in the JSON object `text`, each `None` when the
/// object has no such field; `None` as a whole when the pass cannot vouch for the text.
pub(crate) fn fields<const N: usize>(
    text: &str,
    names: [&str; N],
) -> Option<[Option<Range<usize>>; N]> {
    whole(text, |s| s.object(names, |s, _| s.value()))
}

/// `read` over the JSON text `text`, which must hold one value and nothing else.
pub(crate) fn whole<T>(text: &str, read: impl FnOnce(&mut Scanner) -> Option<T>) -> Option<T> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.space();
    let found = read(&mut s)?;
    s.space();
    (s.i == s.b.len()).then_some(found)
}

/// Bytes that end a string's plain run: the quote, the backslash and the control characters.
static STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// How many bytes at the start of `b` are plain in a string, 8 at a time while it can: the
/// first quote, backslash or control byte of a word is its lowest flagged one (a borrow only
/// flags bytes above a true match), so the first of all three is found in one test.
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut n = 0;
    let mut words = b.chunks_exact(8);
    for chunk in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let x = u64::from_le_bytes(w);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let flagged = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let flagged = flagged & HIGHS;
        if flagged != 0 {
            return n + (flagged.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + words
        .remainder()
        .iter()
        .position(|&c| STOPS[usize::from(c)])
        .unwrap_or(words.remainder().len())
}

/// A cursor over JSON text that checks what it passes. Readers of a known shape walk it with
/// [`Scanner::object`] and [`Scanner::items`] down to the values they want; each such level
/// comes on top of [`MAX_DEPTH`], which a reader's few levels keep within serde_json's 128.
pub(crate) struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    /// The byte at the cursor.
    #[inline(always)]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The text of a range [`Scanner::object`] gave.
    pub(crate) fn bytes(&self, r: Range<usize>) -> &[u8] {
        self.b.get(r).unwrap_or_default()
    }

    /// The object at the cursor: the ranges of the values of `names`, each read by `read`
    /// (given the name's index; it must pass the whole value), every other value passed.
    pub(crate) fn object<const N: usize>(
        &mut self,
        names: [&str; N],
        mut read: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<[Option<Range<usize>>; N]> {
        let mut found: [Option<Range<usize>>; N] = std::array::from_fn(|_| None);
        self.eat(b'{')?;
        self.space();
        if self.eat(b'}').is_some() {
            return Some(found);
        }
        loop {
            let from = self.i + 1;
            if self.string()? {
                return None;
            }
            let key = from..self.i - 1;
            self.space();
            self.eat(b':')?;
            self.space();
            let start = self.i;
            match names
                .iter()
                .position(|n| n.as_bytes() == &self.b[key.clone()])
            {
                Some(at) => {
                    // serde's derive refuses a field named twice.
                    if found[at].is_some() {
                        return None;
                    }
                    read(self, at)?;
                    found[at] = Some(start..self.i);
                }
                None => self.value()?,
            }
            self.space();
            match self.next()? {
                b',' => self.space(),
                b'}' => return Some(found),
                _ => return None,
            }
        }
    }

    /// The array at the cursor, each item read by `read` (which must pass the whole item);
    /// how many items it has.
    pub(crate) fn items(&mut self, mut read: impl FnMut(&mut Self) -> Option<()>) -> Option<usize> {
        self.eat(b'[')?;
        self.space();
        if self.eat(b']').is_some() {
            return Some(0);
        }
        let mut count = 0;
        loop {
            read(self)?;
            count += 1;
            self.space();
            match self.next()? {
                b',' => self.space(),
                b']' => return Some(count),
                _ => return None,
            }
        }
    }

    /// The object at the cursor, each member's value read by `read` given the member's name
    /// (it must pass the whole value); `None` for a name written with escapes.
    pub(crate) fn members(
        &mut self,
        mut read: impl FnMut(&mut Self, &[u8]) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        self.space();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        let b = self.b;
        loop {
            let from = self.i + 1;
            if self.string()? {
                return None;
            }
            let key = b.get(from..self.i - 1)?;
            self.space();
            self.eat(b':')?;
            self.space();
            read(self, key)?;
            self.space();
            match self.next()? {
                b',' => self.space(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// The value at the cursor, passed, and where it lies.
    pub(crate) fn span(&mut self) -> Option<Range<usize>> {
        let start = self.i;
        self.value()?;
        Some(start..self.i)
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    #[inline(always)]
    fn space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// A string at the cursor; whether it has escapes.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            self.i += plain_run(self.b.get(self.i..)?);
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 4;
                        }
                        _ => return None,
                    }
                }
                // A control character, which JSON does not allow unescaped.
                _ => return None,
            }
        }
    }

    /// A member's name and colon, the cursor on the name's opening quote.
    #[inline(always)]
    fn name(&mut self) -> Option<()> {
        self.string()?;
        self.space();
        self.eat(b':')?;
        self.space();
        Some(())
    }

    /// One value, the cursor on its first byte. Containers are walked without recursion: one
    /// bit a level says whether it is an object (1) or an array (0).
    pub(crate) fn value(&mut self) -> Option<()> {
        let mut kinds: u128 = 0;
        let mut depth = 0;
        loop {
            // At the start of a value.
            match *self.b.get(self.i)? {
                open @ (b'{' | b'[') => {
                    depth += 1;
                    if depth >= MAX_DEPTH {
                        return None;
                    }
                    kinds = kinds << 1 | u128::from(open == b'{');
                    self.i += 1;
                    self.space();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.eat(close).is_none() {
                        if open == b'{' {
                            self.name()?;
                        }
                        continue;
                    }
                    depth -= 1;
                    kinds >>= 1;
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.word(b"true")?,
                b'f' => self.word(b"false")?,
                b'n' => self.word(b"null")?,
                _ => self.number()?,
            }
            // After a value: close what it ended, or go on to the next.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.space();
                let object = kinds & 1 == 1;
                match (self.next()?, object) {
                    (b',', _) => {
                        self.space();
                        if object {
                            self.name()?;
                        }
                        break;
                    }
                    (b'}', true) | (b']', false) => {
                        depth -= 1;
                        kinds >>= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        self.b
            .get(self.i..)?
            .starts_with(w)
            .then(|| self.i += w.len())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at<'a>(text: &'a str, r: &Option<Range<usize>>) -> Option<&'a str> {
        r.clone().map(|r| &text[r])
    }

    #[test]
    fn plain_runs_end_at_the_first_stop() {
        for n in 0..40 {
            for stop in [b'"', b'\\', 0, 0x1f] {
                let mut b = vec![b'a'; 40];
                // Bytes that look like stops to a careless test: 0x20, 0xa2 (0x22 | 0x80), é.
                b[n / 3] = 0xa2;
                b[n / 2] = 0x20;
                b[n] = stop;
                if n + 1 < 40 {
                    b[n + 1] = b'"';
                }
                let first = b.iter().position(|&c| STOPS[usize::from(c)]).unwrap();
                assert_eq!(plain_run(&b), first, "{n} {stop}");
            }
        }
        assert_eq!(plain_run("héllo wörld, 12345".as_bytes()), 20);
    }

    #[test]
    fn finds_the_named_fields_and_nothing_inside() {
        let text = r#" {"id":"x","choices":[{"model":1,"usage":{}}],"model" : "m\"1", "usage":{"a":[1,2.5e-3,-0,true,false,null]}} "#;
        let [model, usage, error, choices] =
            fields(text, ["model", "usage", "error", "choices"]).unwrap();
        assert_eq!(at(text, &model), Some(r#""m\"1""#));
        assert_eq!(
            at(text, &usage),
            Some(r#"{"a":[1,2.5e-3,-0,true,false,null]}"#)
        );
        assert_eq!(error, None);
        assert_eq!(at(text, &choices), Some(r#"[{"model":1,"usage":{}}]"#));
    }

    #[test]
    fn leaves_to_serde_what_it_cannot_vouch_for() {
        for text in [
            "",
            "[]",
            "{",
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":1} x"#,
            r#"{"a":1}{}"#,
            r#"{"model":1,"model":2}"#,
            r#"{"mod\u0065l":1}"#,
            r#"{"a" 1}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":{"b"}}"#,
        ] {
            assert!(fields(text, ["model"]).is_none(), "{text}");
        }
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(fields(&deep, ["a"]).is_none());
        let fine = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(fields(&fine, ["a"]).is_some());
    }

    /// Text built from JSON's own pieces, often broken.
    fn jsonish() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\"",
            "\\",
            "\\u00e9",
            "\\n",
            "model",
            "usage",
            "\"model\"",
            "\"usage\"",
            "\"a\"",
            "0",
            "1",
            "-",
            ".",
            "e",
            "+",
            "12",
            "true",
            "null",
            "fals",
            "é",
            "\t",
            "\u{1}",
            "x",
        ]);
        prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    /// Whole objects with the named fields somewhere in them.
    fn objects() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            "[ -~é\\n\"\\\\]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        ];
        let value = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["model", "usage", "k", "error"]),
                        inner
                    ),
                    0..5
                )
                .prop_map(|v| {
                    let m: Vec<String> = v.iter().map(|(k, v)| format!("\"{k}\" : {v}")).collect();
                    format!("{{ {} }}", m.join(" ,"))
                }),
            ]
        });
        prop::collection::vec(
            (
                prop::sample::select(vec!["model", "usage", "choices", "k", "error"]),
                value,
            ),
            0..6,
        )
        .prop_map(|v| {
            let m: Vec<String> = v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", m.join(","))
        })
    }

    /// What serde's derive finds for the same names, `None` where it refuses the text.
    fn by_serde(text: &str) -> Option<[Option<String>; 2]> {
        #[derive(serde::Deserialize)]
        struct Two<'a> {
            #[serde(default, borrow)]
            model: Option<&'a serde_json::value::RawValue>,
            #[serde(default, borrow)]
            usage: Option<&'a serde_json::value::RawValue>,
        }
        let two: Two = serde_json::from_str(text).ok()?;
        Some([two.model, two.usage].map(|r| r.map(|r| r.get().to_owned())))
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        if let Some([model, usage]) = fields(text, ["model", "usage"]) {
            let serde = by_serde(text);
            prop_assert!(serde.is_some(), "accepted what serde refuses: {text}");
            let [m, u] = serde.unwrap_or_default();
            // serde reads `null` as an absent Option.
            let ours =
                |r: &Option<Range<usize>>| at(text, r).filter(|v| *v != "null").map(str::to_owned);
            prop_assert_eq!(ours(&model), m, "{}", text);
            prop_assert_eq!(ours(&usage), u, "{}", text);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn never_accepts_what_serde_refuses(text in jsonish()) {
            check(&text)?;
        }

        #[test]
        fn agrees_with_serde_on_objects(text in objects()) {
            check(&text)?;
            // A valid object without repeated names is always vouched for.
            if by_serde(&text).is_some() && serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                let dup = ["model", "usage"].iter().any(|k| text.matches(&format!("\"{k}\":")).count() > 1);
                prop_assert!(dup || fields(&text, ["model", "usage"]).is_some(), "{}", text);
            }
        }
    }
}
