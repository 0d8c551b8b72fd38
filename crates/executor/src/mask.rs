//! Replacing secret values in log output by `***`, across chunk
//! boundaries, also where the value is written escaped or encoded:
//! percent-encoded with reserved characters kept or not and hex digits of
//! either case, `+` for a space, JSON string escapes (`\/`, `\"`, `\u002f`),
//! and base64 (standard or URL-safe) on its own or inside a longer stream.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// Masks secret values in a stream of output chunks.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    needles: Vec<Needle>,
    /// What a chunk's end held back: the start of what may be a secret.
    carry: Vec<u8>,
}

/// What a needle makes of the bytes from one position on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// It is there, this many bytes long.
    Whole(usize),
    /// The bytes end while they still spell its beginning.
    Begun,
    /// It is not there.
    Absent,
}

/// One thing to find.
#[derive(Debug, Clone)]
enum Needle {
    /// A secret's bytes, each written as itself or in any escaped form.
    Escaped(Vec<u8>),
    /// A base64 form, exactly.
    Exact(Vec<u8>),
}

/// The shortest base64 run taken from inside a longer stream: shorter
/// cores would match ordinary text.
const MIN_CORE: usize = 8;

/// The most bytes one escaped byte takes (`\u002f`).
const WIDEST_ESCAPE: usize = 6;

impl Needle {
    /// What this needle makes of `hay` (from its start).
    fn matches(&self, hay: &[u8]) -> Found {
        match self {
            Needle::Exact(bytes) if hay.starts_with(bytes) => Found::Whole(bytes.len()),
            Needle::Exact(bytes) if !hay.is_empty() && bytes.starts_with(hay) => Found::Begun,
            Needle::Exact(_) => Found::Absent,
            Needle::Escaped(secret) => escaped(hay, secret),
        }
    }

    fn widest(&self) -> usize {
        match self {
            Needle::Exact(bytes) => bytes.len(),
            Needle::Escaped(secret) => secret.len() * WIDEST_ESCAPE,
        }
    }
}

impl Masker {
    /// A masker for these secret values; empty values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut needles: Vec<Needle> = Vec::new();
        let mut exact: Vec<Vec<u8>> = Vec::new();
        for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
            needles.push(Needle::Escaped(secret.as_bytes().to_vec()));
            for form in base64_forms(secret.as_bytes()) {
                if form.len() > 1 && !exact.contains(&form) {
                    exact.push(form);
                }
            }
        }
        needles.extend(exact.into_iter().map(Needle::Exact));
        // Longest first, so a secret containing another is masked whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.widest()));
        Masker {
            needles,
            carry: Vec::new(),
        }
    }

    /// The first needle whole at the start of `hay`; else whether one has
    /// begun there.
    fn find(&self, hay: &[u8]) -> Found {
        let mut begun = false;
        for needle in &self.needles {
            match needle.matches(hay) {
                Found::Whole(len) => return Found::Whole(len),
                Found::Begun => begun = true,
                Found::Absent => {}
            }
        }
        if begun { Found::Begun } else { Found::Absent }
    }

    /// Masks `chunk`; the last few bytes may be held back until the next
    /// chunk (or [`Masker::finish`]) shows whether they start a secret.
    pub fn mask(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.needles.is_empty() {
            return chunk.to_vec();
        }
        let mut buffer = std::mem::take(&mut self.carry);
        buffer.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(buffer.len());
        let mut i = 0;
        while i < buffer.len() {
            match self.find(&buffer[i..]) {
                Found::Whole(len) => {
                    out.extend_from_slice(b"***");
                    i += len;
                }
                // The start of a secret that the next chunk may end: only
                // that is held back.
                Found::Begun => break,
                Found::Absent => {
                    out.push(buffer[i]);
                    i += 1;
                }
            }
        }
        self.carry = buffer[i..].to_vec();
        out
    }

    /// The bytes held back, masked: call once the stream ended.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.carry);
        let mut out = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            if let Found::Whole(len) = self.find(&rest[i..]) {
                out.extend_from_slice(b"***");
                i += len;
            } else {
                out.push(rest[i]);
                i += 1;
            }
        }
        out
    }
}

/// Whether `hay` starts with `secret` spelled byte by byte, each byte as
/// itself or escaped (the longest such spelling), or ends while it still
/// may.
fn escaped(hay: &[u8], secret: &[u8]) -> Found {
    // Most bytes of a log start no spelling: decide those without allocating.
    let Some(&first) = hay.first() else {
        return Found::Absent;
    };
    let starts = secret
        .first()
        .is_some_and(|&b| b == first || (b == b' ' && first == b'+'))
        || first == b'%'
        || first == b'\\';
    if !starts {
        return Found::Absent;
    }
    // Where a spelling of the secret so far may end; escapes overlap
    // (a `\` may be a byte or start an escape), so keep every choice.
    let mut ends = vec![0usize];
    let mut begun = false;
    for &byte in secret {
        let mut next: Vec<usize> = Vec::new();
        for &at in &ends {
            let rest = &hay[at..];
            // The bytes end here, or inside what may be an escape.
            if rest.is_empty() || (rest.len() < WIDEST_ESCAPE && matches!(rest[0], b'%' | b'\\')) {
                begun = true;
            }
            for width in spellings(rest, byte) {
                if !next.contains(&(at + width)) {
                    next.push(at + width);
                }
            }
        }
        if next.is_empty() {
            return if begun { Found::Begun } else { Found::Absent };
        }
        ends = next;
    }
    ends.into_iter().max().map_or(Found::Absent, Found::Whole)
}

/// The widths of every way `hay` starts with `byte`: itself, `%hh` (either
/// case), `+` for a space, a JSON escape (`\/`, `\"`, `\\`, `\n`, `\uXXXX`).
fn spellings(hay: &[u8], byte: u8) -> impl Iterator<Item = usize> {
    let is_hex = |digits: &[u8], value: u32| {
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            == Some(value)
    };
    let json_short = match byte {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        b'/' => Some(b'/'),
        b'\n' => Some(b'n'),
        b'\r' => Some(b'r'),
        b'\t' => Some(b't'),
        0x08 => Some(b'b'),
        0x0c => Some(b'f'),
        _ => None,
    };
    let literal = hay.first() == Some(&byte);
    let percent = hay.len() >= 3 && hay[0] == b'%' && is_hex(&hay[1..3], u32::from(byte));
    let plus = byte == b' ' && hay.first() == Some(&b'+');
    let short = hay.len() >= 2 && hay[0] == b'\\' && json_short == Some(hay[1]);
    let unicode = byte.is_ascii()
        && hay.len() >= 6
        && hay[0] == b'\\'
        && hay[1] == b'u'
        && is_hex(&hay[2..6], u32::from(byte));
    [
        (literal, 1),
        (percent, 3),
        (plus, 1),
        (short, 2),
        (unicode, 6),
    ]
    .into_iter()
    .filter_map(|(found, width)| found.then_some(width))
}

/// The base64 forms of `secret`: the whole encoding, padded or not, and
/// for a secret inside a longer encoded stream, the characters its bytes
/// alone decide at each of the three offsets a byte can start at.
fn base64_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(secret).into_bytes());
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(secret).into_bytes());
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(secret);
            let encoded = engine.encode(&shifted).into_bytes();
            // Character j holds bits 6j..6j+6; the secret's are 8·offset..8·(offset+len).
            let first = (8 * offset).div_ceil(6);
            let last = 8 * (offset + secret.len()) / 6;
            if last > first && last - first >= MIN_CORE {
                forms.push(encoded[first..last].to_vec());
            }
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(masker: &mut Masker, chunks: &[&str]) -> String {
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(masker.mask(chunk.as_bytes()));
        }
        out.extend(masker.finish());
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn masks_the_value_and_its_encodings() {
        let mut m = Masker::new(["s3cr3t/+x"]);
        let b64 = STANDARD_NO_PAD.encode("s3cr3t/+x");
        let text = format!("a s3cr3t/+x b {b64} c s3cr3t%2F%2Bx d");
        assert_eq!(all(&mut m, &[&text]), "a *** b *** c *** d");
    }

    #[test]
    fn masks_across_chunk_boundaries() {
        let mut m = Masker::new(["hunter22"]);
        assert_eq!(all(&mut m, &["pw=hun", "ter", "22!", " ok"]), "pw=***! ok");
        let mut m = Masker::new(["hunter22"]);
        assert_eq!(all(&mut m, &["ends with hunt"]), "ends with hunt");
    }

    #[test]
    fn masks_every_percent_encoding_and_json_escape() {
        let secret = "s3cr3t/Value+with=signs&more";
        let forms = [
            // Python's quote (keeps '/'), quote(safe=''), quote_plus, lower case.
            "s3cr3t/Value%2Bwith%3Dsigns%26more",
            "s3cr3t%2FValue%2Bwith%3Dsigns%26more",
            "s3cr3t%2fValue%2bwith%3dsigns%26more",
            "s3cr3t\\/Value+with=signs&more",
            "s3cr3t\\u002fValue\\u002Bwith=signs\\u0026more",
        ];
        for form in forms {
            let mut m = Masker::new([secret]);
            let text = format!("a {form} b");
            assert_eq!(all(&mut m, &[&text]), "a *** b", "{form}");
        }
        let mut m = Masker::new(["pass word"]);
        assert_eq!(all(&mut m, &["x=pass+word y=pass%20word"]), "x=*** y=***");
    }

    #[test]
    fn masks_base64_inside_a_longer_stream_at_every_offset() {
        let secret = "correct-horse-battery";
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
                let text = engine.encode(format!("{prefix}{secret} and more after it"));
                let mut m = Masker::new([secret]);
                let masked = all(&mut m, &[&text]);
                assert!(masked.contains("***"), "{prefix:?}: {text} → {masked}");
            }
        }
    }

    #[test]
    fn escaped_forms_are_masked_across_chunk_boundaries() {
        let mut m = Masker::new(["a/b/c/d"]);
        assert_eq!(all(&mut m, &["x a%2", "Fb%2fc", "\\/d y"]), "x *** y");
    }

    #[test]
    fn only_what_begins_a_secret_is_held_back() {
        let mut m = Masker::new(["hunter22"]);
        assert_eq!(m.mask(b"hello world\n"), b"hello world\n", "nothing held");
        assert_eq!(m.mask(b"pw: hun"), b"pw: ");
        assert_eq!(m.mask(b"gry\n"), b"hungry\n");
        assert_eq!(m.mask(b"50%"), b"50", "a '%' may start an escape");
        assert_eq!(m.finish(), b"%");
    }

    #[test]
    fn without_secrets_nothing_changes_or_waits() {
        let mut m = Masker::new([""]);
        assert_eq!(m.mask(b"abc"), b"abc");
        assert_eq!(m.finish(), b"");
    }
}
