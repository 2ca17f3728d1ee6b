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

/// Splits a line into lower-case words, dropping punctuation around them.
///
/// Words are borrowed from the line unless they need lower-casing: inside a WASM guest
/// an allocation costs several times what it does natively, and most words need none.
pub fn tokenize(line: &str) -> impl Iterator<Item = Cow<'_, str>> {
    line.split_whitespace()
        .map(|word| word.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|word| !word.is_empty())
        .map(lowercase)
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
}
