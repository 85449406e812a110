//! The wire format of the debconf protocol: reply lines, the escape capability, and
//! commands before they are formatted.

use super::Error;

/// A reply line split into its numeric code and the text after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) code: u16,
    pub(super) text: String,
}

/// Splits a reply line at the first space or tab: the code before it, the text after it.
pub(super) fn parse_reply(line: &str) -> Option<Reply> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (code, text) = match line.find([' ', '\t']) {
        Some(index) => (&line[..index], &line[index + 1..]),
        None => (line, ""),
    };
    if code.is_empty() || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some(Reply {
        code: code.parse().ok()?,
        text: text.to_owned(),
    })
}

/// Escapes text for a client that negotiated `escape`: backslash becomes `\\` and newline `\n`.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            _ => escaped.push(character),
        }
    }
    escaped
}

/// Reverses [`escape`] on the text of a code 1 reply. A backslash before any other character
/// stands for that character, as in debconf-escape -u of debconf 1.5.82, and a trailing lone
/// backslash is kept.
pub(super) fn unescape(text: &str) -> String {
    let mut unescaped = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            unescaped.push(character);
            continue;
        }
        match characters.next() {
            Some('n') => unescaped.push('\n'),
            Some(escaped) => unescaped.push(escaped),
            None => unescaped.push('\\'),
        }
    }
    unescaped
}

/// One command before it is formatted: single-word arguments, each with the name used in
/// error messages, and an optional free-form last argument that is never logged.
pub(super) struct Request<'a> {
    pub(super) command: &'static str,
    pub(super) words: &'a [(&'static str, &'a str)],
    pub(super) text: Option<(&'static str, &'a str)>,
}

impl<'a> Request<'a> {
    pub(super) fn new(command: &'static str, words: &'a [(&'static str, &'a str)]) -> Self {
        Request {
            command,
            words,
            text: None,
        }
    }

    pub(super) fn with_text(mut self, name: &'static str, text: &'a str) -> Self {
        self.text = Some((name, text));
        self
    }

    /// Returns the single-word arguments joined by spaces, which are safe to log.
    pub(super) fn arguments(&self) -> String {
        let words: Vec<&str> = self.words.iter().map(|(_, word)| *word).collect();
        words.join(" ")
    }

    pub(super) fn invalid(&self, argument: &'static str, problem: &'static str) -> Error {
        Error::InvalidArgument {
            command: self.command,
            argument,
            problem,
        }
    }
}
