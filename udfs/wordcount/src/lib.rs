//! Word count UDFs: the example every Sluice tutorial starts from.
//!
//! ```toml
//! steps = [
//!   { op = "flat_map", udf = "wordcount#tokenize" },
//!   { op = "map", udf = "wordcount#with_one" },
//!   { op = "reduce_by_key", udf = "wordcount#sum" },
//! ]
//! ```

use sluice_sdk::udfs;

/// Splits a line into lower-case words, dropping punctuation around them.
pub fn tokenize(line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|word| {
            word.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|word| !word.is_empty())
        .collect()
}

/// Keeps words of more than three letters (drops "the", "and", "a", ...).
pub fn is_long_word(word: &str) -> bool {
    word.chars().count() > 3
}

/// Pairs a word with a count of one.
pub fn with_one(word: String) -> (String, i64) {
    (word, 1)
}

/// Adds two counts.
pub fn sum(a: i64, b: i64) -> i64 {
    a + b
}

/// Takes a count back out of a sum: the inverse of `sum`, for windows.
pub fn subtract(a: i64, b: i64) -> i64 {
    a - b
}

/// Upper-cases a line: the map of the throughput benchmark.
pub fn uppercase(line: &str) -> String {
    line.to_ascii_uppercase()
}

udfs! {
    flat_map tokenize,
    filter is_long_word,
    map with_one,
    reduce sum,
    reduce subtract,
    map uppercase,
}
