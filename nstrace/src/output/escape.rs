//! Text that traced processes and other users control (a comm, an exe path, a cgroup name, a
//! finding's message quoting them), made safe to print for people.
//!
//! A traced process chooses its comm (`/proc/self/comm`) and its executable's path, and whoever
//! may make a cgroup chooses its name: printed raw, a newline forges a line of output, an escape
//! sequence rewrites the terminal, and a bidirectional override makes text read backwards.
//! [`escape`] makes any such string one line of printable text, as `strace` and `ls -b` do:
//!
//! - a backslash is doubled, so every escape below is unambiguous;
//! - `\n`, `\r` and `\t` are written so; other ASCII controls (and DEL) as `\xNN`;
//! - every other character Unicode does not call printable (C1 controls, the line and paragraph
//!   separators, bidirectional and zero-width format characters, unassigned code points) as
//!   `\u{NNNN}`, as Rust's `char::escape_debug` decides;
//! - U+FFFD as `\u{fffd}`: bytes that were not UTF-8 became it when the record was decoded (the
//!   JSON outputs and record files hold Unicode), and the escape says so rather than pass for
//!   text.
//!
//! JSON output needs none of this: serde_json escapes every control character, and a JSON
//! string holds any text exactly. Escaping happens once, where text is written for people, and
//! never to what the timeline keeps.
use std::{borrow::Cow, fmt, fmt::Write as _};

/// `text` as one line of printable characters (see the module's documentation).
pub fn escape(text: &str) -> Cow<'_, str> {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    push_escaped(&mut out, text);
    Cow::Owned(out)
}

/// Appends `text`, escaped, to `out`.
pub fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{fffd}' => out.push_str("\\u{fffd}"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // Quotes are printable text here, not delimiters.
            '\'' | '"' => out.push(c),
            c => {
                let mut escaped = c.escape_debug();
                // Unchanged, or `\u{...}` for what Unicode does not call printable; a
                // combining mark counts as printable (only escape_debug of a whole str at its
                // start escapes it).
                if escaped.len() == 1 || is_combining(c) {
                    out.push(c);
                } else {
                    out.extend(&mut escaped);
                }
            }
        }
    }
}

/// Whether `c` is a combining mark that `char::escape_debug` escapes although it is printable
/// text after a base character (`e` + U+0301 is é).
fn is_combining(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036f | 0x1ab0..=0x1aff | 0x1dc0..=0x1dff | 0x20d0..=0x20ff | 0xfe20..=0xfe2f)
}

/// Writes a string escaped, for `format!` and `write!`.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// `text` for XML character data and attribute values: escaped for people as [`escape`] does
/// (XML 1.0 allows no control characters but tab, newline and carriage return, not even as
/// character references), then the five XML specials as entities.
pub fn xml(text: &str) -> Cow<'_, str> {
    let printable = escape(text);
    if !printable.contains(['&', '<', '>', '"', '\'']) {
        return printable;
    }
    let mut out = String::with_capacity(printable.len() + 16);
    for c in printable.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `s` is one line of printable text: nothing a terminal acts on.
    fn is_one_printable_line(s: &str) -> bool {
        s.chars().all(|c| {
            matches!(c, '\\' | '"' | '\'')
                || is_combining(c)
                || (!c.is_control() && c.escape_debug().len() == 1)
        })
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in [
            "runc:[1:CHILD]",
            "ip",
            "/usr/bin/unshare",
            "a b",
            "it's \"x\"",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s}");
            assert_eq!(escape(s), s);
        }
    }

    #[test]
    fn a_forged_line_and_a_terminal_escape_become_visible_text() {
        assert_eq!(escape("ev\nFAKE\x1b[2J"), "ev\\nFAKE\\x1b[2J");
        assert_eq!(escape("a\rb\tc\0d\x7f"), "a\\rb\\tc\\x00d\\x7f");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
    }

    #[test]
    fn unicode_separators_controls_and_overrides_are_escaped() {
        assert_eq!(escape("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
        assert_eq!(escape("x\u{85}y\u{9b}z"), "x\\u{85}y\\u{9b}z");
        // "exe.txt" spelt backwards behind a right-to-left override.
        assert_eq!(escape("txt\u{202e}exe"), "txt\\u{202e}exe");
        assert_eq!(escape("a\u{200b}b\u{feff}"), "a\\u{200b}b\\u{feff}");
        assert_eq!(escape("bad \u{fffd} byte"), "bad \\u{fffd} byte");
    }

    #[test]
    fn printable_unicode_stays_readable() {
        assert_eq!(escape("crun ünï"), "crun ünï");
        assert_eq!(escape("e\u{301}"), "e\u{301}");
        assert_eq!(escape("容器"), "容器");
    }

    #[test]
    fn every_char_escapes_to_printable_text() {
        let mut all = String::new();
        for c in (0..0x11_0000).filter_map(char::from_u32) {
            all.push(c);
            all.push('a');
        }
        let escaped = escape(&all);
        assert!(is_one_printable_line(&escaped));
        assert!(!escaped.contains('\n'));
    }

    #[test]
    fn xml_text_is_well_formed_whatever_the_input() {
        assert_eq!(xml("a<b>&\"'\x01"), "a&lt;b&gt;&amp;&quot;&apos;\\x01");
        let hostile = "ev\nFAKE\x1b[2J\u{0}\u{fffe}\u{ffff}<x/>";
        let doc = format!("<t a=\"{0}\">{0}</t>", xml(hostile));
        roxmltree::Document::parse(&doc).expect("well-formed XML");
    }
}
