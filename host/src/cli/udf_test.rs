//! `sluice udf test COMPONENT#FUNCTION`: a function tried on sample input, without a job.
//!
//! Input is JSON lines in the typed JSON of `table` sources (`sluice::json`), one call
//! per line so that each line's result, failure and output stand on their own:
//!
//! | kind | a line | prints |
//! |---|---|---|
//! | map, filter | one record | its result (filter: `true` or `false`) |
//! | flat_map | one record | the array of what it gave |
//! | map_partition | one record (all lines are one partition) | one line per result |
//! | reduce | a group: an array of values | the reduced value |
//! | fold | an array: the accumulator, then the values | the accumulator |
//! | update_state | `{"values": [...], "state": s}` | `{"state": s}` (`null`: dropped) |
//! | map_with_state | `{"key", "values", "state", "timing_out", "batch_time_ms"}` | `{"emitted": [...], "state": s}` |

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sluice::json;
use sluice::runtime::{InstancePool, Runtime, RuntimeConfig};
use sluice::udf::BoundUdf;
use sluice_abi::{Batch, Groups, Kind, Value};

/// The limits a test call runs under, as a job's `[limits]` keys (`None`: the default).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct LimitFlags {
    /// Linear memory an instance may grow to (`[limits] memory`), e.g. `64MiB`.
    #[arg(long)]
    pub memory: Option<String>,
    /// Longest one call may run (`[limits] call_timeout`), e.g. `2s`.
    #[arg(long)]
    pub call_timeout: Option<String>,
    /// Output kept per call (`[limits] output`), e.g. `64KiB`.
    #[arg(long)]
    pub output: Option<String>,
    /// Most a call may pass from guest to host (`[limits] transfer`).
    #[arg(long)]
    pub transfer: Option<String>,
}

/// Batch time given to state functions when a line names none (`batch_time_ms`).
const DEFAULT_BATCH_TIME_MS: i64 = 0;

/// Runs `reference` (`path.wasm#function`) on the JSON lines of `input` (`-`: stdin).
pub fn test(reference: &str, input: &Path, limits: &LimitFlags) -> Result<ExitCode> {
    let (component, function) = reference.rsplit_once('#').with_context(|| {
        format!("`{reference}` names no function: write `path/to/component.wasm#function`")
    })?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let udf = bind(&runtime, Path::new(component), function, limits)?;
    let lines: Vec<String> = if input == Path::new("-") {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()
    } else {
        std::io::BufReader::new(
            std::fs::File::open(input)
                .with_context(|| format!("cannot open the input {}", input.display()))?,
        )
        .lines()
        .collect::<Result<_, _>>()
    }
    .context("cannot read the input lines")?;
    let inputs: Vec<(usize, Value)> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            json::parse(line)
                .map(|value| (index + 1, value))
                .with_context(|| format!("input line {}: not typed JSON", index + 1))
        })
        .collect::<Result<_>>()?;
    let mut failed = false;
    if udf.kind() == Kind::MapPartition {
        let values: Vec<Value> = inputs.into_iter().map(|(_, value)| value).collect();
        match udf.records(batch(&values)) {
            Ok(results) => results
                .iter()
                .for_each(|record| println!("{}", show(record))),
            Err(error) => {
                eprintln!("error: {error}");
                failed = true;
            }
        }
    } else {
        for (line, value) in inputs {
            if let Err(error) = call(&udf, value) {
                eprintln!("error: input line {line}: {error:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The function `function` of the component at `path`, on a pool of one instance with
/// the limits a job would give it.
fn bind(
    runtime: &Arc<Runtime>,
    path: &Path,
    function: &str,
    limits: &LimitFlags,
) -> Result<BoundUdf> {
    let component = runtime.load(path)?;
    let Some((index, kind)) = component.function_index(function) else {
        let names: Vec<&str> = component
            .functions()
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        let guess = sluice::manifest::suggest::closest(function, names.iter().copied())
            .map(|name| format!("did you mean `{name}`? "))
            .unwrap_or_default();
        bail!(
            "{} has no function `{function}`: {guess}it exports: {}",
            path.display(),
            names.join(", ")
        );
    };
    let config = limits_job(runtime, path, limits)?;
    let placement = runtime.tenancy().place(
        &config,
        runtime.scheduler(),
        tokio_util::sync::CancellationToken::new(),
    )?;
    let label = format!("{}#{function}", path.display());
    let pool = InstancePool::new(
        component,
        label.clone(),
        config.limits,
        placement,
        1,
        Default::default(),
    )?;
    Ok(BoundUdf::Wasm {
        pool: Arc::new(pool),
        index,
        kind,
        label,
    })
}

/// A job holding nothing but the limits: the manifest reads and bounds them as it does a
/// job's `[limits]`, so that a test runs under exactly what a job would.
fn limits_job(
    runtime: &Runtime,
    component: &Path,
    flags: &LimitFlags,
) -> Result<sluice::manifest::JobConfig> {
    let mut text = String::from("name = \"udf-test\"\nbatch_interval = \"1s\"\n[limits]\n");
    for (key, value) in [
        ("memory", &flags.memory),
        ("call_timeout", &flags.call_timeout),
        ("output", &flags.output),
        ("transfer", &flags.transfer),
    ] {
        if let Some(value) = value {
            text.push_str(&format!("{key} = {}\n", toml::Value::String(value.clone())));
        }
    }
    text.push_str(
        "[[sources]]\nname = \"s\"\nkind = \"queue\"\nbatches = [[1]]\n\
         [[sinks]]\nfrom = \"s\"\nkind = \"collect\"\n",
    );
    let flags_file = PathBuf::from(format!("(limits of udf test of {})", component.display()));
    Ok(sluice::manifest::parse(&text, &flags_file, runtime)?)
}

/// One call on one input line; prints its result.
fn call(udf: &BoundUdf, value: Value) -> Result<()> {
    match udf.kind() {
        Kind::Map => print_all(&udf.records(batch(&[value]))?),
        Kind::Filter => {
            let kept = udf.filter(batch(&[value]))?;
            println!("{}", !kept.is_empty());
        }
        Kind::FlatMap => {
            let groups = udf.flat_map(batch(&[value]))?;
            println!("{}", show_list(groups.records().iter()));
        }
        Kind::Reduce | Kind::Fold => {
            let Value::List(values) = value else {
                bail!(
                    "a {} line is a JSON array: {}",
                    udf.kind(),
                    shape(udf.kind())
                );
            };
            if values.is_empty() {
                bail!("the array is empty: {}", shape(udf.kind()));
            }
            print_all(&udf.aggregate(Groups::single(batch(&values)))?);
        }
        Kind::UpdateState => {
            let [values, state] = fields(value, ["values", "state"], udf.kind())?;
            let Value::List(values) = values else {
                bail!("`values` is an array: {}", shape(udf.kind()));
            };
            let mut group = vec![cell(state)];
            group.extend(values);
            let cells = udf.update_state(DEFAULT_BATCH_TIME_MS, Groups::single(batch(&group)))?;
            println!("{{\"state\":{}}}", show_cell(cells.get(0))?);
        }
        Kind::MapWithState => {
            let [key, values, state, timing_out, time] = fields(
                value,
                ["key", "values", "state", "timing_out", "batch_time_ms"],
                udf.kind(),
            )?;
            let (Value::List(values), Value::Bool(_) | Value::Null) = (values, &timing_out) else {
                bail!(
                    "`values` is an array and `timing_out` a boolean: {}",
                    shape(udf.kind())
                );
            };
            let time = match time {
                Value::Int(time) => time,
                Value::Null => DEFAULT_BATCH_TIME_MS,
                _ => bail!("`batch_time_ms` is an integer: {}", shape(udf.kind())),
            };
            let timing_out = matches!(timing_out, Value::Bool(true));
            let mut group = vec![
                key,
                Value::Tuple(vec![cell(state), Value::Bool(timing_out)]),
            ];
            group.extend(values);
            let results = udf.map_with_state(time, Groups::single(batch(&group)))?;
            let mut records = results.records().iter();
            let state = show_cell(records.next().context("no state cell came back")?)?;
            println!("{{\"emitted\":{},\"state\":{state}}}", show_list(records));
        }
        Kind::MapPartition => unreachable!("map_partition runs on all lines at once"),
    }
    Ok(())
}

/// What a line of `kind` looks like, for errors.
fn shape(kind: Kind) -> &'static str {
    match kind {
        Kind::Reduce => "a group of values, e.g. `[1, 2, 3]`",
        Kind::Fold => "the accumulator, then the values, e.g. `[0, 1, 2]`",
        Kind::UpdateState => "e.g. `{\"values\": [1, 2], \"state\": 5}` (`null`: no state)",
        Kind::MapWithState => {
            "e.g. `{\"key\": \"a\", \"values\": [1], \"state\": null, \"timing_out\": false, \"batch_time_ms\": 0}`"
        }
        _ => "one record",
    }
}

/// The named fields of a JSON object line, `null` for those missing.
fn fields<const N: usize>(value: Value, names: [&str; N], kind: Kind) -> Result<[Value; N]> {
    let Value::Map(mut entries) = value else {
        bail!("a {kind} line is a JSON object: {}", shape(kind));
    };
    if let Some((unknown, _)) = entries
        .iter()
        .find(|(key, _)| !matches!(key, Value::String(key) if names.contains(&key.as_str())))
    {
        bail!("unknown field {unknown} in a {kind} line: {}", shape(kind));
    }
    Ok(names.map(|name| {
        entries
            .iter()
            .position(|(key, _)| matches!(key, Value::String(key) if key == name))
            .map_or(Value::Null, |at| entries.swap_remove(at).1)
    }))
}

/// A state cell: a list of no element (no state, `null`) or of the state.
fn cell(state: Value) -> Value {
    match state {
        Value::Null => Value::List(Vec::new()),
        state => Value::List(vec![state]),
    }
}

fn batch(values: &[Value]) -> Batch {
    let mut batch = Batch::with_capacity(values.len(), 64 * values.len());
    for value in values {
        batch.push_with(|out| value.encode_into(out));
    }
    batch
}

fn print_all(results: &Batch) {
    results
        .iter()
        .for_each(|record| println!("{}", show(record)));
}

/// A record as typed JSON.
fn show(record: &[u8]) -> String {
    Value::decode(record).map_or_else(
        |error| format!("\"(undecodable record: {error})\""),
        |value| json::to_json(&value),
    )
}

fn show_list<'r>(records: impl Iterator<Item = &'r [u8]>) -> String {
    let shown: Vec<String> = records.map(show).collect();
    format!("[{}]", shown.join(","))
}

/// The state in a returned cell as typed JSON, `null` for none.
fn show_cell(record: &[u8]) -> Result<String> {
    match Value::decode(record) {
        Ok(Value::List(mut state)) if state.len() <= 1 => Ok(state
            .pop()
            .map_or_else(|| "null".to_owned(), |state| json::to_json(&state))),
        _ => bail!("the function returned something other than a state cell"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_lines_are_read_by_field_name_and_missing_fields_are_null() {
        let value = json::parse(r#"{"state": 5, "values": [1, 2]}"#).unwrap();
        let [values, state] = fields(value, ["values", "state"], Kind::UpdateState).unwrap();
        assert_eq!(values, Value::List(vec![Value::Int(1), Value::Int(2)]));
        assert_eq!(state, Value::Int(5));
        let value = json::parse(r#"{"values": []}"#).unwrap();
        let [_, state] = fields(value, ["values", "state"], Kind::UpdateState).unwrap();
        assert_eq!(state, Value::Null);
        let value = json::parse(r#"{"vals": []}"#).unwrap();
        let error = fields(value, ["values", "state"], Kind::UpdateState).unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
    }

    #[test]
    fn cells_hold_no_state_for_null() {
        assert_eq!(cell(Value::Null), Value::List(vec![]));
        assert_eq!(cell(Value::Int(1)), Value::List(vec![Value::Int(1)]));
        let mut out = Vec::new();
        cell(Value::Int(7)).encode_into(&mut out);
        assert_eq!(show_cell(&out).unwrap(), "7");
    }

    #[test]
    fn limit_flags_are_read_and_bounded_as_a_jobs_limits() {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: None,
            max_instances: 1,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let flags = LimitFlags {
            call_timeout: Some("250ms".into()),
            ..LimitFlags::default()
        };
        let config = limits_job(&runtime, Path::new("x.wasm"), &flags).unwrap();
        assert_eq!(
            config.limits.call_timeout,
            std::time::Duration::from_millis(250)
        );
        let flags = LimitFlags {
            memory: Some("1KiB".into()),
            ..LimitFlags::default()
        };
        let error = limits_job(&runtime, Path::new("x.wasm"), &flags).unwrap_err();
        assert!(format!("{error:#}").contains("out of range"), "{error:#}");
    }
}
