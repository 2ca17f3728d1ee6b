//! "Did you mean": the known name closest to a misspelt one.
//!
//! Names are compared after folding the spellings other tools use for the same thing
//! (`countByValue`, `count-by-value`, `COUNT_BY_VALUE` all read as `count_by_value`), then
//! by edit distance with transpositions (`fliter`), allowing about one edit per three
//! letters, so that far-off names get no suggestion rather than a wrong one.

/// The choice closest to `name`, if one is close enough to be a likely misspelling.
pub fn closest<'a>(name: &str, choices: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let folded = fold(name);
    let mut best: Option<(usize, &str)> = None;
    for choice in choices {
        let distance = strsim::damerau_levenshtein(&folded, &fold(choice));
        if best.is_none_or(|(least, _)| distance < least) {
            best = Some((distance, choice));
        }
    }
    let (distance, choice) = best?;
    let allowed = (folded.chars().count().min(choice.chars().count()) / 3).max(1);
    (choice != name && distance <= allowed).then_some(choice)
}

/// `help` text with a suggestion first, when there is one: "did you mean `x`? {help}".
pub fn hint<'a>(name: &str, choices: impl IntoIterator<Item = &'a str>, help: &str) -> String {
    match closest(name, choices) {
        Some(choice) => format!("did you mean `{choice}`? {help}"),
        None => help.to_owned(),
    }
}

/// For an error of serde's `deny_unknown_fields` or of an unknown enum variant ("unknown
/// field `x`, expected one of `a`, `b`"), the suggestion for `x`.
pub fn unknown_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest
        .split_once("expected ")?
        .1
        .split('`')
        .skip(1)
        .step_by(2);
    closest(name, expected).map(|choice| format!("did you mean `{choice}`?"))
}

/// Lower case, words joined by `_`: `countByValue` and `count-by-value` become
/// `count_by_value`.
fn fold(name: &str) -> String {
    let mut folded = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_uppercase() && previous_lower {
            folded.push('_');
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        match c {
            '-' | ' ' => folded.push('_'),
            c => folded.extend(c.to_lowercase()),
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: &[&str] = &[
        "map",
        "filter",
        "count_by_value",
        "reduce_by_key",
        "flat_map",
    ];

    #[test]
    fn misspellings_get_the_name_meant() {
        let cases = [
            ("countByValue", "count_by_value"),
            ("count-by-value", "count_by_value"),
            ("fliter", "filter"),
            ("reduceByKey", "reduce_by_key"),
            ("flatmap", "flat_map"),
            ("mapp", "map"),
        ];
        for (typed, meant) in cases {
            assert_eq!(closest(typed, OPS.iter().copied()), Some(meant), "{typed}");
        }
    }

    #[test]
    fn far_off_names_get_no_suggestion() {
        for typed in [
            "window",
            "xyz",
            "",
            "sort_by",
            "count_by_value_and_window_x",
        ] {
            assert_eq!(closest(typed, OPS.iter().copied()), None, "{typed}");
        }
    }

    #[test]
    fn an_exact_name_is_not_suggested_to_itself() {
        assert_eq!(closest("map", ["map"]), None);
    }

    #[test]
    fn serde_unknown_field_errors_are_answered() {
        let message =
            "unknown field `batch_intervall`, expected one of `name`, `batch_interval`, `sources`";
        assert_eq!(
            unknown_field(message).as_deref(),
            Some("did you mean `batch_interval`?")
        );
        let message = "unknown field `colour`, expected `name` or `kind`";
        assert_eq!(unknown_field(message), None);
        assert_eq!(unknown_field("invalid type: integer"), None);
    }

    #[test]
    fn hint_puts_the_suggestion_first() {
        assert_eq!(
            hint("tokenise", ["tokenize", "sum"], "it exports: tokenize, sum"),
            "did you mean `tokenize`? it exports: tokenize, sum"
        );
        assert_eq!(hint("zzz", ["tokenize"], "help"), "help");
    }
}

#[cfg(test)]
mod manifest_tests {
    use std::path::Path;
    use std::sync::{Arc, LazyLock};

    use crate::runtime::{Runtime, RuntimeConfig};

    /// One small runtime for every test: each reserves address space for its instances.
    static RUNTIME: LazyLock<Arc<Runtime>> = LazyLock::new(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            max_instances: 4,
            ..RuntimeConfig::default()
        })
        .unwrap()
    });

    fn refused(steps: &str, top: &str) -> String {
        let text = format!(
            "name = \"t\"\nbatch_interval = \"1s\"\n{top}\n[[sources]]\nname = \"s\"\nkind = \"queue\"\nbatches = [[1]]\n\
             [[streams]]\nname = \"w\"\nfrom = \"s\"\nsteps = [{steps}]\n\
             [[sinks]]\nfrom = \"w\"\nkind = \"print\"\n"
        );
        match crate::manifest::parse(&text, Path::new("job.toml"), &RUNTIME) {
            Ok(_) => String::new(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn every_suggested_operator_is_one_the_manifest_accepts() {
        for op in super::super::resolve::OPERATORS {
            let error = refused(&format!("{{ op = \"{op}\" }}"), "");
            assert!(!error.contains("unknown operator"), "{op}: {error}");
        }
    }

    #[test]
    fn manifest_errors_suggest_the_name_meant() {
        let cases = [
            (
                "{ op = \"countByValue\" }",
                "",
                "did you mean `count_by_value`?",
            ),
            (
                "",
                "batch_intervall = \"1s\"",
                "did you mean `batch_interval`?",
            ),
            (
                "{ op = \"map\", udf = \"wc#f\" }",
                "[udfs]\nwcc = \"x.wasm\"",
                "did you mean `wcc`?",
            ),
        ];
        for (steps, top, expected) in cases {
            let error = refused(steps, top);
            assert!(error.contains(expected), "{steps} {top}: {error}");
        }
        let error = refused("{ op = \"sort_by_key\" }", "");
        assert!(
            error.contains("unknown operator") && !error.contains("did you mean"),
            "{error}"
        );
    }
}
