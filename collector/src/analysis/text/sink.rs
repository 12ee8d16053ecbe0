//! The text of one attachment as it is read: cut at its limit, at a
//! character boundary, and a reader's error turned into a status.

use super::{EXTRACTED, Extracted, NONE};

/// Why a reader stopped, or that the content has no text at all.
#[derive(Debug)]
pub(super) enum Stop {
    /// The content is damaged, encrypted or not of the claimed kind.
    Unreadable(String),
    /// The content holds no text of any kind this reads (a plain ZIP).
    NoText,
}

pub(super) type ReadResult = Result<(), Stop>;

pub(super) fn unreadable(why: impl std::fmt::Display) -> Stop {
    Stop::Unreadable(why.to_string())
}

pub(super) struct Sink {
    text: String,
    max: usize,
    cut: bool,
}

impl Sink {
    pub(super) fn new(max: usize) -> Sink {
        Sink {
            text: String::new(),
            max,
            cut: false,
        }
    }

    /// Appends `s`; false once the limit is reached (the reader may stop).
    pub(super) fn push(&mut self, s: &str) -> bool {
        if self.cut {
            return false;
        }
        let room = self.max - self.text.len();
        if s.len() <= room {
            self.text.push_str(s);
            return true;
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        self.cut = true;
        false
    }

    pub(super) fn push_char(&mut self, c: char) -> bool {
        self.push(c.encode_utf8(&mut [0; 4]))
    }

    /// Ends a line (a paragraph, a row, a page) unless one just ended, so
    /// that words of two paragraphs are never joined.
    pub(super) fn line_break(&mut self) -> bool {
        if self.text.is_empty() || self.text.ends_with('\n') {
            return !self.cut;
        }
        self.push("\n")
    }

    /// Records that the input was cut before its text was all read.
    pub(super) fn mark_cut(&mut self) {
        self.cut = true;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub(super) fn full(&self) -> bool {
        self.cut
    }

    /// The text and its status. A reader that failed after some text keeps
    /// that text, and the status says it is unreadable.
    pub(super) fn finish(self, result: ReadResult) -> Extracted {
        let status = match result {
            Err(Stop::Unreadable(why)) => format!("unreadable: {why}"),
            Err(Stop::NoText) => NONE.into(),
            Ok(()) if self.cut => format!("cut at {} bytes", self.text.len()),
            Ok(()) => EXTRACTED.into(),
        };
        Extracted {
            text: self.text,
            status,
        }
    }
}
