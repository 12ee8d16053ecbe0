//! The analyzer of every full-text field (subject, body, attachment names,
//! paths): how text becomes the terms the index holds and a query looks up.
//!
//! ## What it does
//! 1. **Normalises** with Unicode NFKC, so full-width ASCII and half-width
//!    kana fold to their canonical forms (`ＡＢＣ` = `ABC`, `ｶﾞ` = `ガ`,
//!    `㈱` = `(株)`), then **lower-cases** (`ABC` = `abc`).
//! 2. **Cuts** the normalised text into runs of three classes:
//!    - *CJK*: Han (with `々`, `〆`, `〇`), Hiragana, Katakana (with the
//!      prolonged sound mark `ー`) and Hangul;
//!    - *words*: letters, digits and combining marks of any other script;
//!    - everything else separates.
//! 3. A **word** is one term. A word longer than [`MAX_WORD_CHARS`] is cut
//!    to that length rather than dropped, so a long identifier still finds
//!    itself (tantivy's default analyzer drops tokens of 40 bytes or more,
//!    which lost every Japanese sentence of 14 characters or more).
//! 4. A **CJK run** of `n` characters at position `p` is indexed as the
//!    unigram of each character `i` at `p + i` and the bigram of
//!    characters `i, i + 1` at `p + i` (what Lucene's `cjk` analyzer does,
//!    plus the unigrams); the next term is at `p + n`.
//!
//! ## Phrase semantics
//! tantivy's query parser turns a word that analyses into several terms
//! into a phrase query that places each term at its token position. At
//! query time a CJK run of two or more characters therefore yields only
//! its bigrams ([`Mode::Query`]): `売上報告` is the phrase `売上`@0 `上報`@1
//! `報告`@2, which matches only where the four characters are adjacent — a
//! text holding `売上` and `報告` apart has no `上報` between them. A lone
//! character (`株`) yields its unigram, which every indexed character has.
//! Mixed text keeps the shared positions: `Q3売上report` is indexed as
//! `q3`@0 `売`@1 `売上`@1 `上`@2 `report`@3 and queried as `q3`@0 `売上`@1
//! `report`@3, a phrase with a gap that the index fills.
//!
//! So normalisation and cutting are identical at index and query time;
//! only the terms a CJK run emits differ. Emitting the unigrams at query
//! time too would still match exactly the same documents (a phrase may
//! hold two terms at one position), but each query would then also read
//! the long posting lists of common single characters, for nothing.
//!
//! ## Why hand-written
//! tantivy 0.27 ships no CJK bigram tokenizer (its `NgramTokenizer` makes
//! n-grams of every word regardless of script and positions them all at
//! 0, so phrase semantics are lost). The crates that analyse Japanese for
//! tantivy are morphological (lindera, whose dictionaries must be built or
//! fetched, and which misses a query cutting across the words it
//! segmented; tantivy-tokenizer-tiny-segmenter, last released for tantivy
//! 0.10) or Chinese (cang-jie / jieba); none does bigrams, and none
//! applies NFKC. The normalisation itself is the well-kept
//! `unicode-normalization` crate.

use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer, TokenizerManager};
use unicode_normalization::char::{canonical_combining_class, decompose_compatible};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick, is_nfkc_quick};

/// The tokenizer name every full-text field of the schema uses: a new
/// text field should use it too (`TextFieldIndexing::set_tokenizer`).
pub const NAME: &str = "kiroku_cjk";

/// Characters of a word beyond which the word is cut (a SHA-256 in hex
/// still fits whole).
pub const MAX_WORD_CHARS: usize = 64;

/// Which terms a CJK run yields (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Unigrams and bigrams: what documents are indexed with.
    Index,
    /// Bigrams only for a run of two or more characters, the unigram of a
    /// lone one: what queries are analysed with.
    Query,
}

/// The analyzer documents are indexed with.
pub fn index_analyzer() -> TextAnalyzer {
    TextAnalyzer::from(CjkTokenizer::new(Mode::Index))
}

/// The analyzer queries are analysed with.
pub fn query_analyzer() -> TextAnalyzer {
    TextAnalyzer::from(CjkTokenizer::new(Mode::Query))
}

/// Registers the index-time analyzer under [`NAME`] on an index.
pub fn register(index: &tantivy::Index) {
    index.tokenizers().register(NAME, index_analyzer());
}

/// The tokenizers a query parser uses: tantivy's defaults, with [`NAME`]
/// analysing in [`Mode::Query`].
pub fn query_tokenizers() -> TokenizerManager {
    let m = TokenizerManager::default();
    m.register(NAME, query_analyzer());
    m
}

/// A character of the normalised text and the bytes of the original text
/// it came from.
#[derive(Clone, Copy, Debug)]
struct NormChar {
    c: char,
    from: usize,
    to: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Cjk,
    Word,
    Separator,
}

/// The tokenizer itself. It keeps its buffers between texts, so indexing
/// many documents allocates only when a text is longer than any before.
#[derive(Clone)]
pub struct CjkTokenizer {
    mode: Mode,
    chars: Vec<NormChar>,
    tokens: Vec<Token>,
}

impl CjkTokenizer {
    pub fn new(mode: Mode) -> CjkTokenizer {
        CjkTokenizer {
            mode,
            chars: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

/// The tokens of one text, produced when the stream is made.
pub struct CjkTokenStream<'a> {
    tokens: &'a mut [Token],
    /// Tokens handed out so far; the current one is `next - 1`.
    next: usize,
    /// What `token()` shows before the first `advance()` or after the
    /// last, as tantivy's own streams do.
    none: Token,
}

impl TokenStream for CjkTokenStream<'_> {
    fn advance(&mut self) -> bool {
        if self.next <= self.tokens.len() {
            self.next += 1;
        }
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        match self.next.checked_sub(1) {
            Some(i) if i < self.tokens.len() => &self.tokens[i],
            _ => &self.none,
        }
    }

    fn token_mut(&mut self) -> &mut Token {
        match self.next.checked_sub(1) {
            Some(i) if i < self.tokens.len() => &mut self.tokens[i],
            _ => &mut self.none,
        }
    }
}

impl Tokenizer for CjkTokenizer {
    type TokenStream<'a> = CjkTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CjkTokenStream<'a> {
        normalise(text, &mut self.chars);
        let mut out = Tokens {
            tokens: &mut self.tokens,
            used: 0,
        };
        cut(&self.chars, self.mode, &mut out);
        let used = out.used;
        CjkTokenStream {
            tokens: &mut self.tokens[..used],
            next: 0,
            none: Token::default(),
        }
    }
}

/// Writes NFKC-normalised, lower-cased `text` into `out`. The text is
/// normalised in segments that start at a stable boundary (UAX #15: a
/// character whose decomposition starts with a starter that never
/// composes with what precedes it), so the result equals the NFKC of the
/// whole text and every output character knows its source bytes.
fn normalise(text: &str, out: &mut Vec<NormChar>) {
    out.clear();
    let mut start = 0;
    for (i, c) in text.char_indices().skip(1) {
        if is_stable_boundary(c) {
            push_segment(&text[start..i], start, out);
            start = i;
        }
    }
    if start < text.len() {
        push_segment(&text[start..], start, out);
    }
}

/// The most frequent characters of Japanese text: kana and the main Han
/// block. Each is already NFKC, has no case, and is a stable boundary
/// (nothing before it can compose with it), so the table look-ups below
/// are skipped for them.
fn is_plain_cjk(c: char) -> bool {
    matches!(c as u32, 0x3041..=0x3096 | 0x30A1..=0x30FA | 0x30FC | 0x4E00..=0x9FFF)
}

fn is_stable_boundary(c: char) -> bool {
    if c.is_ascii() || is_plain_cjk(c) {
        return true;
    }
    let mut first = None;
    decompose_compatible(c, |d| {
        first.get_or_insert(d);
    });
    let first = first.unwrap_or(c);
    canonical_combining_class(first) == 0
        && is_nfc_quick(std::iter::once(first)) == IsNormalized::Yes
}

fn push_segment(seg: &str, from: usize, out: &mut Vec<NormChar>) {
    let to = from + seg.len();
    let mut push = |c: char| {
        for l in c.to_lowercase() {
            out.push(NormChar { c: l, from, to });
        }
    };
    let mut one = seg.chars();
    match (one.next(), one.next()) {
        (Some(c), None) if is_plain_cjk(c) => out.push(NormChar { c, from, to }),
        (Some(c), None) if c.is_ascii() => out.push(NormChar {
            c: c.to_ascii_lowercase(),
            from,
            to,
        }),
        // Most segments are one character that is already normal.
        (Some(c), None)
            if c.is_ascii() || is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes =>
        {
            push(c)
        }
        _ => seg.nfkc().for_each(push),
    }
}

fn class(c: char) -> Class {
    if is_cjk(c) {
        Class::Cjk
    } else if c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c) {
        Class::Word
    } else {
        Class::Separator
    }
}

/// Han, Hiragana, Katakana and Hangul, after NFKC (half-width forms have
/// become their full-width ones by then).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3005..=0x3007          // 々 〆 〇
        | 0x3021..=0x3029        // Suzhou numerals
        | 0x3038..=0x303B
        | 0x3041..=0x309A        // Hiragana with the combining (semi-)voiced marks
        | 0x309D..=0x309F        // ゝ ゞ ゟ
        | 0x30A1..=0x30FA        // Katakana
        | 0x30FC..=0x30FF        // ー ヽ ヾ ヿ (not the middle dot ・, a separator)
        | 0x31F0..=0x31FF        // Katakana phonetic extensions
        | 0x3400..=0x4DBF        // Han extension A
        | 0x4E00..=0x9FFF        // Han
        | 0xF900..=0xFAFF        // Han compatibility
        | 0x20000..=0x3FFFF      // Han extensions B and later
        | 0x1100..=0x11FF        // Hangul jamo
        | 0x3131..=0x318E        // Hangul compatibility jamo
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7AF        // Hangul syllables
        | 0xD7B0..=0xD7FF
    )
}

/// The token buffer being filled: tokens before `used` are this text's,
/// the rest are kept for their allocations.
struct Tokens<'a> {
    tokens: &'a mut Vec<Token>,
    used: usize,
}

impl Tokens<'_> {
    fn push(&mut self, chars: &[NormChar], position: usize) {
        if self.used == self.tokens.len() {
            self.tokens.push(Token::default());
        }
        let t = &mut self.tokens[self.used];
        self.used += 1;
        t.text.clear();
        t.text.extend(chars.iter().map(|n| n.c));
        t.position = position;
        t.position_length = 1;
        t.offset_from = chars.first().map_or(0, |n| n.from);
        t.offset_to = chars.last().map_or(0, |n| n.to);
    }
}

/// Cuts normalised characters into terms (see the module documentation).
fn cut(chars: &[NormChar], mode: Mode, out: &mut Tokens<'_>) {
    let mut position = 0;
    let mut i = 0;
    while i < chars.len() {
        let k = class(chars[i].c);
        let mut end = i + 1;
        while end < chars.len() && class(chars[end].c) == k {
            end += 1;
        }
        let run = &chars[i..end];
        match k {
            Class::Separator => {}
            Class::Word => {
                out.push(&run[..run.len().min(MAX_WORD_CHARS)], position);
                position += 1;
            }
            Class::Cjk => {
                let n = run.len();
                for j in 0..n {
                    if mode == Mode::Index || n == 1 {
                        out.push(&run[j..j + 1], position + j);
                    }
                    if j + 1 < n {
                        out.push(&run[j..j + 2], position + j);
                    }
                }
                position += n;
            }
        }
        i = end;
    }
}

#[cfg(test)]
mod tests;
