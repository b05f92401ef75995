//! How a token's piece is drawn so that token boundaries stay visible whatever the tokenizer:
//! word-level pieces (`pine`, decoded without spaces), byte-level BPE (`Ġpine`, or ` pine`
//! once decoded) and SentencePiece (`▁pine`). Each view draws a token as its own box (page)
//! or between `│` separators (terminal); a piece that starts a word is marked by a leading
//! [`SPACE_MARK`], so a word split into pieces reads as one mark and several boxes.

/// Stands for the space (` `, `Ġ`, `▁`) a piece starts with.
pub const SPACE_MARK: char = '·';

/// A token's piece as a view draws it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The piece starts with a space (or its `Ġ` / `▁` spelling).
    pub space: bool,
    /// The rest, printable: newline `↵`, tab `⇥`, other control characters as `\u{..}`
    /// escapes (they could move a terminal's cursor), an empty piece `∅`.
    pub text: String,
    /// The piece holds a newline: the view breaks the line after it.
    pub newline: bool,
}

impl Piece {
    pub fn of(raw: &str) -> Piece {
        let (space, rest) = match raw.chars().next() {
            Some(c @ (' ' | 'Ġ' | '▁')) => (true, &raw[c.len_utf8()..]),
            _ => (false, raw),
        };
        let mut text = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '\n' => text.push('↵'),
                '\t' => text.push('⇥'),
                c if c.is_control() => text.push_str(&c.escape_unicode().to_string()),
                c => text.push(c),
            }
        }
        if text.is_empty() && !space {
            text.push('∅');
        }
        Piece { space, text, newline: rest.contains('\n') }
    }

    /// The piece as one string: the space mark, then the text.
    pub fn shown(&self) -> String {
        if self.space {
            format!("{SPACE_MARK}{}", self.text)
        } else {
            self.text.clone()
        }
    }
}
