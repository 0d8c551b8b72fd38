//! Replacing secret values in log output by `***`, also in their base64
//! and URL-encoded forms, across chunk boundaries.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Masks secret values in a stream of output chunks.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    needles: Vec<Vec<u8>>,
    longest: usize,
    carry: Vec<u8>,
}

impl Masker {
    /// A masker for these secret values; empty values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
            let forms = [
                secret.to_owned(),
                STANDARD_NO_PAD.encode(secret),
                URL_SAFE_NO_PAD.encode(secret),
                url_encode(secret),
            ];
            for form in forms {
                if !needles.iter().any(|n| n == form.as_bytes()) {
                    needles.push(form.into_bytes());
                }
            }
        }
        // Longest first, so a secret containing another is masked whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let longest = needles.first().map_or(0, Vec::len);
        Masker {
            needles,
            longest,
            carry: Vec::new(),
        }
    }

    /// Masks `chunk`; the last few bytes may be held back until the next
    /// chunk (or [`Masker::finish`]) shows whether they start a secret.
    pub fn mask(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.needles.is_empty() {
            return chunk.to_vec();
        }
        let mut buffer = std::mem::take(&mut self.carry);
        buffer.extend_from_slice(chunk);
        let hold = self.longest.saturating_sub(1);
        let mut out = Vec::with_capacity(buffer.len());
        let mut i = 0;
        while i < buffer.len() {
            if let Some(needle) = self.needles.iter().find(|n| buffer[i..].starts_with(n)) {
                out.extend_from_slice(b"***");
                i += needle.len();
            } else if buffer.len() - i <= hold {
                // Could be the start of a secret that the next chunk ends.
                break;
            } else {
                out.push(buffer[i]);
                i += 1;
            }
        }
        self.carry = buffer[i..].to_vec();
        out
    }

    /// The bytes held back, masked: call once the stream ended.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.carry);
        let hold = std::mem::replace(&mut self.longest, 0);
        let mut out = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            if let Some(needle) = self.needles.iter().find(|n| rest[i..].starts_with(n)) {
                out.extend_from_slice(b"***");
                i += needle.len();
            } else {
                out.push(rest[i]);
                i += 1;
            }
        }
        self.longest = hold;
        out
    }
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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
    fn without_secrets_nothing_changes_or_waits() {
        let mut m = Masker::new([""]);
        assert_eq!(m.mask(b"abc"), b"abc");
        assert_eq!(m.finish(), b"");
    }
}
