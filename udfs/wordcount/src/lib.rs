//! Word count UDFs: the example every Sluice tutorial starts from.
//!
//! ```toml
//! steps = [
//!   { op = "flat_map", udf = "wordcount#tokenize" },
//!   { op = "map", udf = "wordcount#with_one" },
//!   { op = "reduce_by_key", udf = "wordcount#sum" },
//! ]
//! ```

use std::borrow::Cow;

use sluice_sdk::{State, udfs};

/// Splits a line into lower-case words, dropping punctuation around them: the pieces
/// between whitespace (`char::is_whitespace`), trimmed of characters that are not
/// alphanumeric (`char::is_alphanumeric`), lower-cased (`str::to_lowercase`), empty ones
/// dropped.
///
/// Words are borrowed from the line unless they need lower-casing: inside a WASM guest
/// an allocation costs several times what it does natively, and most words need none.
/// A word of ASCII text is found byte by byte, which is what those rules come to for
/// ASCII; a word with any other character is found by the rules themselves.
pub fn tokenize(line: &str) -> impl Iterator<Item = Cow<'_, str>> {
    Words { rest: line }
}

/// The words of the rest of a line (see [`tokenize`]).
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Words<'a> {
    type Item = Cow<'a, str>;

    #[inline]
    fn next(&mut self) -> Option<Cow<'a, str>> {
        while !self.rest.is_empty() {
            if let Some(word) = self.next_piece() {
                return Some(word);
            }
        }
        None
    }
}

impl<'a> Words<'a> {
    /// Takes the next piece off the rest (and the whitespace before it): its word, if
    /// trimming leaves one.
    #[inline]
    fn next_piece(&mut self) -> Option<Cow<'a, str>> {
        let bytes = self.rest.as_bytes();
        let start = bytes
            .iter()
            .position(|&byte| !is_ascii_whitespace(byte))
            .unwrap_or(bytes.len());
        let mut end = start;
        let mut upper = false;
        loop {
            // Eight bytes at a time while none of them can end the piece: a quarter of
            // the iterations, each of which a WASM guest pays an interruption check for.
            while let Some(eight) = bytes.get(end..end + 8) {
                let (stops, uppers) = classify(u64::from_le_bytes(eight.try_into().expect("8")));
                if stops == 0 {
                    upper |= uppers != 0;
                    end += 8;
                    continue;
                }
                let inside = stops.trailing_zeros() / 8;
                upper |= uppers & ((1 << (inside * 8)) - 1) != 0;
                end += inside as usize;
                break;
            }
            // The byte that may end the piece (whitespace, another control character, or
            // one that is not ASCII), or one of the last seven.
            match bytes.get(end) {
                None => break,
                Some(byte) if !byte.is_ascii() => return self.next_unicode_piece(start),
                Some(&byte) if is_ascii_whitespace(byte) => break,
                Some(byte) => {
                    upper |= byte.is_ascii_uppercase();
                    end += 1;
                }
            }
        }
        // ASCII up to `end`, so both are character boundaries.
        let piece = &self.rest[start..end];
        self.rest = &self.rest[end..];
        let word = trim_ascii_punctuation(piece);
        // An upper-case letter is alphanumeric: if the piece had one, so has the word.
        (!word.is_empty()).then(|| {
            if upper {
                Cow::Owned(word.to_ascii_lowercase())
            } else {
                Cow::Borrowed(word)
            }
        })
    }

    /// [`Self::next_piece`] by the Unicode rules, for a piece from byte `start` of the
    /// rest that is not all ASCII (or whitespace before it that is not).
    #[cold]
    fn next_unicode_piece(&mut self, start: usize) -> Option<Cow<'a, str>> {
        let rest = self.rest[start..].trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (piece, after) = rest.split_at(end);
        self.rest = after;
        let word = piece.trim_matches(|c: char| !c.is_alphanumeric());
        (!word.is_empty()).then(|| lowercase(word))
    }
}

/// Eight bytes of text, read little-endian, classified at once: the high bit of each byte
/// that may end a piece (a control character or space, `..= b' '`, or a byte that is not
/// ASCII) in the first word, and of each ASCII upper-case letter in the second. Each byte
/// is judged by its own bits: no carry crosses into the next.
#[inline]
fn classify(eight: u64) -> (u64, u64) {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let each = |byte: u8| u64::from_le_bytes([byte; 8]);
    // Per byte, the low seven bits plus `0x80 - n` set the high bit where they are >= n.
    let low = eight & !HIGH;
    let at_least = |n: u8| low + each(0x80 - n);
    let stops = (eight | !at_least(b'!')) & HIGH;
    let uppers = at_least(b'A') & !at_least(b'Z' + 1) & !eight & HIGH;
    (stops, uppers)
}

/// An ASCII piece without the characters that are not alphanumeric at either end.
#[inline]
fn trim_ascii_punctuation(piece: &str) -> &str {
    let bytes = piece.as_bytes();
    let start = bytes
        .iter()
        .position(u8::is_ascii_alphanumeric)
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(u8::is_ascii_alphanumeric)
        .map_or(start, |last| last + 1);
    &piece[start..end]
}

/// `char::is_whitespace` for an ASCII byte: a space, or a tab to a carriage return
/// (`u8::is_ascii_whitespace` leaves out the vertical tab).
#[inline]
fn is_ascii_whitespace(byte: u8) -> bool {
    byte == b' ' || (b'\t'..=b'\r').contains(&byte)
}

fn lowercase(word: &str) -> Cow<'_, str> {
    if word.chars().any(char::is_uppercase) {
        Cow::Owned(word.to_lowercase())
    } else {
        Cow::Borrowed(word)
    }
}

/// Keeps words of more than three letters (drops "the", "and", "a", ...).
pub fn is_long_word(word: &str) -> bool {
    word.chars().count() > 3
}

/// Pairs a word with a count of one.
pub fn with_one(word: &str) -> (&str, i64) {
    (word, 1)
}

/// Keys a word by itself and its length, `((word, length), "rust")`: a composite key, as
/// the test that joins keys made in Rust, in Python and in a table needs.
pub fn keyed_by_length(word: &str) -> ((&str, i64), &str) {
    ((word, word.chars().count() as i64), "rust")
}

/// Adds two counts.
pub fn sum(a: i64, b: i64) -> i64 {
    a + b
}

/// Takes a count back out of a sum: the inverse of `sum`, for windows.
pub fn subtract(a: i64, b: i64) -> i64 {
    a - b
}

/// Adds a batch's counts to a word's running total (updateStateByKey): the stateful word
/// count.
pub fn running_count(counts: Vec<i64>, total: Option<i64>) -> Option<i64> {
    Some(total.unwrap_or(0) + counts.iter().sum::<i64>())
}

/// Counts a word's occurrences (mapWithState), emitting `(word, count so far)` for each;
/// a word idle for longer than the step's timeout emits its final count once more.
pub fn count_each<'w>(
    word: &'w str,
    one: Option<i64>,
    total: &mut State<i64>,
) -> Option<(&'w str, i64)> {
    if total.is_timing_out() {
        return total.get().map(|&count| (word, count));
    }
    let count = total.get().copied().unwrap_or(0) + one.unwrap_or(0);
    total.update(count);
    Some((word, count))
}

/// Upper-cases a line: the map of the throughput benchmark.
pub fn uppercase(line: &str) -> String {
    line.to_ascii_uppercase()
}

udfs! {
    flat_map tokenize,
    filter is_long_word,
    map with_one,
    map keyed_by_length,
    reduce sum,
    reduce subtract,
    map uppercase,
    update_state running_count,
    map_with_state count_each,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_lowercases_and_trims_punctuation() {
        let words: Vec<_> = tokenize("The river, the GATE -- and \"Sluice\"!").collect();
        assert_eq!(words, ["the", "river", "the", "gate", "and", "sluice"]);
        assert!(
            matches!(words[1], Cow::Borrowed(_)),
            "a lower-case word is borrowed"
        );
        assert!(
            matches!(words[3], Cow::Owned(_)),
            "an upper-case word is copied"
        );
    }

    /// The rules `tokenize` follows, applied to the whole line by the standard library.
    fn by_the_unicode_rules(line: &str) -> Vec<String> {
        line.split_whitespace()
            .map(|piece| piece.trim_matches(|c: char| !c.is_alphanumeric()))
            .filter(|word| !word.is_empty())
            .map(str::to_lowercase)
            .collect()
    }

    #[test]
    fn eight_bytes_are_classified_as_each_byte_alone_is() {
        for byte in 0..=u8::MAX {
            for at in 0..8 {
                let mut eight = *b"wordWORD";
                eight[at] = byte;
                let (stops, uppers) = classify(u64::from_le_bytes(eight));
                for (i, &b) in eight.iter().enumerate() {
                    let bit = 0x80u64 << (8 * i);
                    assert_eq!(
                        stops & bit != 0,
                        !b.is_ascii() || b <= b' ',
                        "{eight:?} {i}"
                    );
                    assert_eq!(uppers & bit != 0, b.is_ascii_uppercase(), "{eight:?} {i}");
                }
            }
        }
    }

    #[test]
    fn ascii_text_splits_at_every_ascii_whitespace_and_keeps_digits() {
        let line = "\t one\ttwo\nthree\x0bfour\x0cfive\rsix  7th -- 'x' \x1fglued\x1f ";
        let words: Vec<_> = tokenize(line).collect();
        assert_eq!(
            words,
            [
                "one", "two", "three", "four", "five", "six", "7th", "x", "glued"
            ]
        );
        assert_eq!(words, by_the_unicode_rules(line));
        assert_eq!(tokenize("").count(), 0);
        assert_eq!(tokenize(" \t-- ... \r\n").count(), 0);
    }

    #[test]
    fn words_with_other_characters_follow_the_unicode_rules() {
        let line = "Café\u{a0}naïve «Straße»\u{3000}ÉCOLE 東京 plain ¡Hola! x\u{85}y MiXeD\u{2003}";
        let words: Vec<_> = tokenize(line).collect();
        assert_eq!(
            words,
            [
                "café", "naïve", "straße", "école", "東京", "plain", "hola", "x", "y", "mixed"
            ]
        );
        assert_eq!(words, by_the_unicode_rules(line));
        assert!(
            matches!(words[5], Cow::Borrowed(_)),
            "an ASCII word after others is borrowed"
        );
    }

    #[test]
    fn any_mix_of_ascii_and_other_characters_splits_as_the_unicode_rules_do() {
        let alphabet = [
            "a", "Z", "9", " ", "\t", "\x0b", "\r", "\x1c", "-", "'", "é", "É", "ß", "\u{a0}",
            "\u{85}", "\u{3000}", "«", "東", "\u{301}", "İ", "stream", "GATES.", "x\x01y",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            let mut line = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for _ in 0..seed % 64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                line.push_str(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let words: Vec<_> = tokenize(&line).collect();
            assert_eq!(words, by_the_unicode_rules(&line), "line {line:?}");
        }
    }
}
