//! {name}: Sluice user functions. `sluice udf build .` compiles them to a component,
//! `sluice udf test` tries one on sample input, and `sluice run job.toml` runs the job.

use sluice_sdk::udfs;

/// Splits a line into lower-case words (a flat-map: one line in, any number of words out).
pub fn tokenize(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_lowercase).collect()
}

/// Pairs a word with a count of one (a map: one record in, one out), ready to be reduced
/// by key.
pub fn with_one(word: String) -> (String, i64) {
    (word, 1)
}

/// Adds two counts (a reduce: the host calls it on the values of each key).
pub fn sum(a: i64, b: i64) -> i64 {
    a + b
}

// The functions the component exports, each with its kind: flat_map, map, filter,
// map_partition, reduce, fold, update_state or map_with_state.
udfs! {
    flat_map tokenize,
    map with_one,
    reduce sum,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_splits_and_lowercases() {
        assert_eq!(tokenize("To be  OR"), ["to", "be", "or"]);
    }

    #[test]
    fn with_one_pairs_a_word_with_one() {
        assert_eq!(with_one("be".into()), ("be".to_string(), 1));
    }

    #[test]
    fn sum_adds() {
        assert_eq!(sum(2, 3), 5);
    }
}
