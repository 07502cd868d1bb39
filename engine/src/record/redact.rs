//! The redactor: every secret value the engine resolved, masked wherever data leaves the engine.
//!
//! It masks by value, not by pattern: the raw text and its base64 (standard and URL-safe, at each
//! of the three byte alignments: `base64_forms`; and each line of a long secret's base64 as `base64`
//! and PEM wrap it: `wrapped_base64_lines`), hex (both cases) and percent-encoded (and `+` for
//! space) forms, longest first, replaced by `[REDACTED]`; forms that overlap in the text (two
//! secrets sharing bytes) are one stretch, masked whole (`Scanner::spans`). Values shorter than
//! `MIN_SECRET_LEN` (4 bytes) are not masked. A credential joins when it is first read (secret
//! inputs, `secret_args`, passwords and passphrases as a connection reads them), so text recorded
//! before that is not masked after the fact. `StreamRedactor` holds back `longest − 1` bytes so a
//! secret split across writes is masked, and a stretch of overlapping forms until no form starting
//! in it could still reach past it (at most `JOINED_HOLD_MAX`). Redaction happens when data is
//! written (artifacts on disk are already masked, persistent state is stored masked); step results
//! travel whole between steps, so a front end redacts them.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use super::scan::Scanner;

use serde_json::Value;

/// What a masked secret is replaced with.
pub const MASK: &str = "[REDACTED]";
/// Secrets shorter than this are not masked (they would mask ordinary words).
pub const MIN_SECRET_LEN: usize = 4;

/// Known secrets and their encoded forms. Cheap to share: wrap it in an `Arc`.
#[derive(Debug, Default)]
pub struct Redactor {
    known: RwLock<Known>,
}

/// The forms, and the scanner that finds them (none while there are no forms).
#[derive(Debug, Default)]
struct Known {
    forms: Vec<String>,
    longest: usize,
    scanner: Option<Scanner>,
}

impl Known {
    /// Every stretch of forms, as byte ranges: overlapping forms (of two secrets) are one stretch,
    /// masked whole.
    fn matches<'h>(&'h self, hay: &'h [u8]) -> impl Iterator<Item = std::ops::Range<usize>> + 'h {
        self.scanner.iter().flat_map(move |s| s.spans(hay))
    }

    /// `hay` with every match replaced by the mask, or `None` when nothing matched.
    fn masked(&self, hay: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0;
        for m in self.matches(hay) {
            let o = out.get_or_insert_with(|| Vec::with_capacity(hay.len()));
            o.extend_from_slice(&hay[at..m.start]);
            o.extend_from_slice(MASK.as_bytes());
            at = m.end;
        }
        let mut o = out?;
        o.extend_from_slice(&hay[at..]);
        Some(o)
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (known_hosts keys, HTTP basic credentials).
pub(crate) fn base64_padded(bytes: &[u8]) -> String {
    let mut s = base64(bytes, false);
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    s
}

/// Base64 without padding (standard, or URL-safe alphabet).
pub(crate) fn base64(bytes: &[u8], url: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let mut c = B64[((n >> (18 - 6 * i)) & 63) as usize];
            if url {
                c = match c {
                    b'+' => b'-',
                    b'/' => b'_',
                    c => c,
                };
            }
            out.push(c as char);
        }
    }
    out
}

/// The base64 text of `secret` wherever it sits in a longer byte stream: for each alignment, the characters
/// that depend only on the secret's bytes.
fn base64_forms(secret: &[u8], url: bool) -> Vec<String> {
    let mut forms = Vec::new();
    for pad in 0..3usize {
        let mut bytes = vec![0u8; pad];
        bytes.extend_from_slice(secret);
        let enc = base64(&bytes, url);
        // leading chars mixed with the pad bytes, trailing chars mixed with what follows
        let skip = (pad * 8).div_ceil(6);
        let total_bits = bytes.len() * 8;
        let stable_end = total_bits / 6;
        if stable_end > skip {
            forms.push(enc[skip..stable_end].to_owned());
        }
    }
    forms
}

/// Columns at which encoders wrap base64: PEM and `openssl base64` (64), `base64` (76).
const BASE64_WRAPS: [usize; 2] = [64, 76];
/// The shortest line of a wrapped base64 secret that is masked on its own.
const MIN_WRAPPED_LINE: usize = 8;

/// The lines of the secret's base64, encoded alone and wrapped at each of `BASE64_WRAPS` (`base64`
/// with no flags, `echo $SECRET | base64`): a long secret's encoding is cut by line breaks, so its
/// unbroken forms are not found. The last line keeps its padding; one shorter than
/// `MIN_WRAPPED_LINE` is not masked on its own.
fn wrapped_base64_lines(secret: &[u8]) -> Vec<String> {
    let full = base64_padded(secret);
    let mut lines = Vec::new();
    for w in BASE64_WRAPS {
        if full.len() <= w {
            continue;
        }
        for line in full.as_bytes().chunks(w) {
            if line.len() >= MIN_WRAPPED_LINE {
                lines.push(String::from_utf8_lossy(line).into_owned());
            }
        }
    }
    lines
}

/// Percent-encoding of every byte but the unreserved ones and `kept`.
fn percent_keeping(secret: &str, kept: &[u8]) -> String {
    let mut out = String::new();
    for b in secret.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || kept.contains(&b)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The JSON-escaped forms encoders also write: every non-ASCII character as `\uXXXX` (UTF-16, as
/// Python's `json.dumps` does by default) and `/` as `\/` (PHP's `json_encode`).
fn json_variants(json: &str) -> Vec<String> {
    let mut ascii = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    let slashed = |t: &str| t.replace('/', "\\/");
    let mut out = vec![slashed(json), slashed(&ascii), ascii];
    out.retain(|f| f != json);
    out
}

/// Percent-encoding with lower-case hex digits.
fn lower_percent(pct: &str) -> String {
    let mut out = String::with_capacity(pct.len());
    let mut hex_left = 0;
    for c in pct.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret value (and its encodings).
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let mut forms = vec![secret.to_owned()];
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase());
        forms.push(hex);
        // every byte but the unreserved escaped; a path's `/` kept (Python's `quote`); `!'()*` kept
        // (JavaScript's `encodeURIComponent`)
        for kept in [&b""[..], b"/", b"!'()*"] {
            let pct = percent_keeping(secret, kept);
            if pct != secret {
                // `%2F` and `%2f` are the same byte; `+` is a space in forms
                let lower = lower_percent(&pct);
                forms.push(lower.replace("%20", "+"));
                forms.push(lower);
                forms.push(pct.replace("%20", "+"));
                forms.push(pct);
            }
        }
        // as it appears inside a JSON string (quotes, backslashes, control characters escaped; and as
        // other encoders write it: non-ASCII as `\u` escapes, `/` as `\/`)
        let json = serde_json::to_string(secret).unwrap_or_default();
        let json = json.trim_matches('"');
        if json != secret {
            forms.push(json.to_owned());
        }
        forms.extend(json_variants(json));
        for url in [false, true] {
            forms.extend(base64_forms(secret.as_bytes(), url));
        }
        forms.extend(wrapped_base64_lines(secret.as_bytes()));
        forms.retain(|f| f.len() >= MIN_SECRET_LEN);
        // each line of a multi-line secret (a key, a certificate) stands on its own in line-based output
        if secret.contains('\n') {
            for line in secret.lines() {
                self.add(line.trim_end_matches('\r'));
            }
        }
        let Ok(mut known) = self.known.write() else {
            return;
        };
        let before = known.forms.len();
        for f in forms {
            if !known.forms.contains(&f) {
                known.forms.push(f);
            }
        }
        if known.forms.len() == before {
            return;
        }
        known.longest = known.forms.iter().map(String::len).max().unwrap_or(0);
        // leftmost-longest: of the forms starting at one place, the longest is masked whole
        known.scanner = Scanner::new(&known.forms);
    }

    /// Registers every string in a JSON value as a secret.
    pub fn add_value(&self, v: &Value) {
        match v {
            Value::String(s) => self.add(s),
            Value::Number(n) => self.add(&n.to_string()),
            Value::Array(a) => a.iter().for_each(|x| self.add_value(x)),
            Value::Object(o) => o.values().for_each(|x| self.add_value(x)),
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.known
            .read()
            .map(|k| k.forms.is_empty())
            .unwrap_or(true)
    }

    /// The longest form, in bytes (a streaming writer holds back this many bytes minus one).
    pub fn longest(&self) -> usize {
        self.known.read().map(|k| k.longest).unwrap_or(0)
    }

    /// Masks every known secret in `s`.
    pub fn redact<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let Ok(known) = self.known.read() else {
            return Cow::Owned(MASK.to_owned());
        };
        match known.masked(s.as_bytes()) {
            // every form is valid UTF-8 and so is the mask: replacing whole forms keeps the text valid
            Some(bytes) => Cow::Owned(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            None => Cow::Borrowed(s),
        }
    }

    /// Masks every known secret in raw bytes (which need not be UTF-8: binary output stays intact).
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let Ok(known) = self.known.read() else {
            return MASK.as_bytes().to_vec();
        };
        known.masked(bytes).unwrap_or_else(|| bytes.to_vec())
    }

    /// The bytes `window` of `bytes` with every known secret that touches them masked: the bytes around
    /// the window are searched too, so a secret the window cuts shows none of its part inside.
    pub fn redact_window(&self, bytes: &[u8], window: std::ops::Range<usize>) -> Vec<u8> {
        let Ok(known) = self.known.read() else {
            return MASK.as_bytes().to_vec();
        };
        let mut out = Vec::with_capacity(window.len());
        let mut at = window.start;
        for m in known.matches(bytes) {
            if m.end <= window.start {
                continue;
            }
            if m.start >= window.end {
                break;
            }
            out.extend_from_slice(&bytes[at..m.start.max(at)]);
            out.extend_from_slice(MASK.as_bytes());
            at = m.end.min(window.end);
        }
        out.extend_from_slice(&bytes[at..window.end]);
        out
    }

    /// Masks every known secret in every string (and object key) of a JSON value.
    pub fn redact_value(&self, v: &Value) -> Value {
        if self.is_empty() {
            return v.clone();
        }
        match v {
            Value::String(s) => Value::String(self.redact(s).into_owned()),
            Value::Number(n) if self.redact(&n.to_string()) != n.to_string() => {
                Value::String(MASK.to_owned())
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.redact_value(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (self.redact(k).into_owned(), self.redact_value(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Redacts a byte stream written in pieces: a secret split across two writes is still masked, because the
/// last `longest - 1` bytes are held back until more arrive or the stream ends.
#[derive(Debug)]
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    pending: Vec<u8>,
}

impl StreamRedactor {
    pub fn new(redactor: Arc<Redactor>) -> Self {
        StreamRedactor {
            redactor,
            pending: Vec::new(),
        }
    }

    /// Takes more bytes; returns the bytes that are safe to emit now. A form is found whole once all
    /// its bytes are here; the last `longest − 1` bytes wait, since a form may start among them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let Ok(known) = self.redactor.known.read() else {
            return MASK.as_bytes().to_vec();
        };
        let hold = known.longest.saturating_sub(1);
        if hold == 0 && self.pending.is_empty() {
            return bytes.to_vec();
        }
        self.pending.extend_from_slice(bytes);
        let out = Vec::with_capacity(self.pending.len());
        safe_part(&known, hold, &mut self.pending, out)
    }

    /// As [`StreamRedactor::push`], for bytes the caller gives up: while no secret is known they are
    /// returned as they are, not copied; else their buffer carries what is safe.
    pub fn push_owned(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        let Ok(known) = self.redactor.known.read() else {
            return MASK.as_bytes().to_vec();
        };
        let hold = known.longest.saturating_sub(1);
        if hold == 0 && self.pending.is_empty() {
            return bytes;
        }
        self.pending.extend_from_slice(&bytes);
        bytes.clear();
        safe_part(&known, hold, &mut self.pending, bytes)
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        self.redactor.redact_bytes(&rest)
    }
}

/// The most a stream holds back for a stretch of overlapping forms that may still grow (text made of
/// forms that overlap one another without end); past it, the stretch found so far is masked as it is.
const JOINED_HOLD_MAX: usize = 256 * 1024;

/// Moves out of `pending`, into `out`, what is safe to emit (every form starting before the last
/// `hold` bytes masked), leaving only those bytes and a form that may go on past them.
fn safe_part(known: &Known, hold: usize, pending: &mut Vec<u8>, mut out: Vec<u8>) -> Vec<u8> {
    if pending.len() <= hold {
        return out;
    }
    // every form starting before `safe` ends inside what is here, so it is found now; a stretch is
    // whole once a form starting inside it would end here too (else it waits, from its start)
    let safe = pending.len() - hold;
    let mut at = 0;
    let mut cut = None;
    for m in known.matches(pending) {
        if m.start >= safe {
            break;
        }
        if m.end + hold > pending.len() && pending.len() < JOINED_HOLD_MAX {
            cut = Some(m.start);
            break;
        }
        out.extend_from_slice(&pending[at..m.start]);
        out.extend_from_slice(MASK.as_bytes());
        at = m.end;
    }
    let cut = cut.unwrap_or(safe.max(at));
    out.extend_from_slice(&pending[at..cut]);
    pending.drain(..cut);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_raw_hex_percent_and_base64_forms() {
        let r = Redactor::new();
        r.add("hunter2-secret");
        assert_eq!(r.redact("pw=hunter2-secret;"), format!("pw={MASK};"));
        let hex: String = "hunter2-secret"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!r.redact(&hex).contains(&hex));
        for prefix in ["", "a", "ab"] {
            let enc = base64(format!("{prefix}hunter2-secret!").as_bytes(), false);
            assert!(r.redact(&enc).contains(MASK), "{prefix}: {enc}");
        }
        r.add("p@ss word/1");
        assert_eq!(r.redact("u=p%40ss%20word%2F1"), format!("u={MASK}"));
        assert_eq!(r.redact("nothing here"), "nothing here");
        assert_eq!(r.redact("u=p%40ss%20word%2f1"), format!("u={MASK}"));
        assert_eq!(r.redact("u=p%40ss+word%2f1"), format!("u={MASK}"));
    }

    #[test]
    fn masks_each_line_of_a_long_secrets_wrapped_base64() {
        let r = Redactor::new();
        let secret = "tok_".to_owned() + &"0123456789abcdefghij".repeat(5);
        r.add(&secret);
        let full = base64_padded(secret.as_bytes());
        for w in BASE64_WRAPS {
            let wrapped: Vec<&str> = full
                .as_bytes()
                .chunks(w)
                .map(|l| std::str::from_utf8(l).expect("ascii"))
                .collect();
            assert!(wrapped.len() > 1, "the secret's base64 wraps at {w}");
            let text = wrapped.join("\n") + "\n";
            let shown = r.redact(&text);
            for line in &wrapped {
                assert!(!shown.contains(line), "{w}: {line} in {shown}");
            }
            assert_eq!(shown.matches(MASK).count(), wrapped.len(), "{shown}");
        }
        // a short secret's base64 is one line, masked by its unbroken forms
        assert!(wrapped_base64_lines(b"hunter2-secret").is_empty());
    }

    #[test]
    fn masks_each_line_and_the_json_escaped_form() {
        let r = Redactor::new();
        let key =
            "-----BEGIN KEY-----\r\nMIIBOgIBAAJBAKj34GkxFhD9\nline\"two\\x\n-----END KEY-----";
        r.add(key);
        // one line of it, in line-based output
        assert_eq!(
            r.redact("got MIIBOgIBAAJBAKj34GkxFhD9 here"),
            format!("got {MASK} here")
        );
        // the whole of it inside a JSON document
        let json = serde_json::to_string(&serde_json::json!({"k": key})).expect("json");
        let shown = r.redact(&json);
        assert!(!shown.contains("MIIBOgIBAAJBAKj34GkxFhD9"), "{shown}");
        assert!(!shown.contains("line\\\"two"), "{shown}");
        assert!(!shown.contains("line\"two"), "{shown}");
        r.add("pa\"ss\\word\tend");
        let json = serde_json::json!({"v": "pa\"ss\\word\tend"}).to_string();
        assert_eq!(r.redact(&json), format!("{{\"v\":\"{MASK}\"}}"));
    }

    #[test]
    fn a_secret_split_across_writes_is_masked() {
        let r = Arc::new(Redactor::new());
        r.add("topsecretvalue");
        let mut s = StreamRedactor::new(r);
        let mut out = s.push(b"aaaa tops");
        out.extend(s.push(b"ecretval"));
        out.extend(s.push(b"ue bbbb"));
        out.extend(s.finish());
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            format!("aaaa {MASK} bbbb")
        );
    }

    #[test]
    fn with_no_secret_known_a_given_up_buffer_passes_as_it_is() {
        let mut s = StreamRedactor::new(Arc::new(Redactor::new()));
        let given = b"plain bytes".to_vec();
        let at = given.as_ptr();
        let out = s.push_owned(given);
        assert_eq!(out, b"plain bytes");
        assert_eq!(out.as_ptr(), at, "no copy");
    }

    #[test]
    fn binary_output_passes_through_a_stream_untouched() {
        let r = Arc::new(Redactor::new());
        r.add("topsecretvalue");
        let data: Vec<u8> = (0..=255u8)
            .cycle()
            .take(10_000)
            .chain("é".bytes())
            .collect();
        let mut s = StreamRedactor::new(r);
        let mut out = Vec::new();
        for chunk in data.chunks(7) {
            out.extend(s.push(chunk));
        }
        out.extend(s.finish());
        assert_eq!(out, data);
    }

    #[test]
    fn a_stream_cut_anywhere_masks_what_the_whole_text_masks() {
        let r = Arc::new(Redactor::new());
        // secrets that overlap, nest and share prefixes, in several encodings
        for s in [
            "abcd-secret",
            "abcd-secret-longer",
            "cd-se",
            "zzzz",
            "p@ss w/rd",
        ] {
            r.add(s);
        }
        let mut next = crate::record::below(0x2545_f491_4f6c_dd1du64);
        let pieces = [
            "abcd-secret",
            "abcd-secret-longer",
            "cd-se",
            "zzzz",
            "zzz",
            "p%40ss+w%2Frd",
            "YWJjZC1zZWNyZXQ",
            "x",
            "\n",
            "abcd-",
            "é",
            "\0",
        ];
        for _ in 0..300 {
            let mut text = Vec::new();
            for _ in 0..next(40) {
                text.extend_from_slice(pieces[next(pieces.len())].as_bytes());
            }
            let whole = r.redact_bytes(&text);
            let mut s = StreamRedactor::new(r.clone());
            let mut out = Vec::new();
            let mut at = 0;
            while at < text.len() {
                let n = 1 + next(24);
                let end = (at + n).min(text.len());
                // borrowed and given-up pieces alike (a given-up buffer carries the safe part)
                if next(2) == 0 {
                    out.extend(s.push(&text[at..end]));
                } else {
                    let mut given = Vec::with_capacity(64);
                    given.extend_from_slice(&text[at..end]);
                    out.extend(s.push_owned(given));
                }
                at = end;
            }
            out.extend(s.finish());
            assert_eq!(out, whole, "{}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn the_encodings_other_encoders_write_are_masked() {
        let r = Redactor::new();
        r.add("p@ss/word-77");
        // Python's `urllib.parse.quote` keeps `/`
        assert_eq!(r.redact("u=p%40ss/word-77&x"), format!("u={MASK}&x"));
        // PHP's `json_encode` escapes `/`
        assert_eq!(
            r.redact(r#"{"pw":"p@ss\/word-77"}"#),
            format!(r#"{{"pw":"{MASK}"}}"#)
        );
        r.add("o'k (x) p@ss!");
        // JavaScript's `encodeURIComponent` keeps `!'()*`
        assert_eq!(r.redact("q=o'k%20(x)%20p%40ss!"), format!("q={MASK}"));
        r.add("pässwörd-ünï-𝄞");
        // Python's `json.dumps` escapes what is not ASCII (UTF-16, a pair for the clef)
        let py = r#"{"pw": "p\u00e4ssw\u00f6rd-\u00fcn\u00ef-\ud834\udd1e"}"#;
        assert_eq!(r.redact(py), format!(r#"{{"pw": "{MASK}"}}"#));
    }

    #[test]
    fn secrets_that_overlap_in_the_text_are_masked_whole() {
        let r = Arc::new(Redactor::new());
        r.add("admin-user");
        r.add("user-pass1");
        let text = "x admin-user-pass1 y user-pass1 admin-user";
        let want = format!("x {MASK} y {MASK} {MASK}");
        assert_eq!(r.redact(text), want);
        for cut in 1..text.len() {
            let mut s = StreamRedactor::new(r.clone());
            let mut out = s.push(&text.as_bytes()[..cut]);
            out.extend(s.push(&text.as_bytes()[cut..]));
            out.extend(s.finish());
            assert_eq!(String::from_utf8(out).expect("utf8"), want, "cut at {cut}");
        }
    }

    #[test]
    fn a_stream_of_forms_overlapping_without_end_is_held_within_bounds() {
        let r = Arc::new(Redactor::new());
        r.add("abab");
        let mut s = StreamRedactor::new(r.clone());
        let mut out = Vec::new();
        for _ in 0..64 {
            out.extend(s.push(&b"ab".repeat(8192)));
            assert!(
                s.pending.len() <= JOINED_HOLD_MAX + 16384,
                "{}",
                s.pending.len()
            );
        }
        out.extend(s.finish());
        let shown = String::from_utf8(out).expect("utf8");
        assert!(!shown.contains("ab"), "every byte masked");
    }

    #[test]
    fn short_values_are_not_secrets() {
        let r = Redactor::new();
        r.add("ab");
        assert!(r.is_empty());
    }
}
