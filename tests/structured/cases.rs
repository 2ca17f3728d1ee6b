//! Runs every case of `shared/conformance/structured/structured-cases.json` (Spark
//! Structured Streaming's event-time suites, replayed on Spark 3.5.9) through the engine,
//! as that folder's README defines them. Ends with `structured: P passed, F failed, S
//! skipped`; fails if any case fails other than those of [`EXPECTED_FAILURES`], and if
//! one of those passes (the list must stay exact).
//!
//! A case's query is translated into a manifest (shown on failure): one queue source per
//! input with a `batches_file`, the pipeline as event-time steps, a collect sink. Batches
//! are driven here, not by the clock: each `add_data` is one batch, followed by one empty
//! batch, which the engine runs as Spark's no-data batch when the watermark moved (and
//! skips otherwise, as Spark does). A `restart` drops the job and starts it again from
//! its checkpoint directory. Output records are read into rows by field name; nothing
//! is filtered, sorted or recomputed here.

use crate::common::{self, stepper::Stepper};

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value as Json, json};
use sluice::event_time::BatchReport;
use sluice::manifest::JobConfig;
use sluice::runtime::Runtime;
use sluice_abi::Value;

/// Cases that fail, each with why: the vocabulary they need that the engine lacks.
const EXPECTED_FAILURES: &[(&str, &str)] = &[];

/// The `derive` columns of the cases: `(as, sql)` and the `udfs/conformance` map function
/// adding that field.
const DERIVED: &[(&str, &str, &str)] = &[
    ("key", "value", "derive_key_value"),
    ("value_plus_1", "value + 1", "derive_value_plus_1"),
    ("leftValue", "value * 2", "derive_left_value_double"),
    ("rightValue", "value * 3", "derive_right_value_triple"),
    ("leftValue", "leftKey * 2", "derive_left_value_key_double"),
    (
        "rightValue",
        "rightKey * 3",
        "derive_right_value_key_triple",
    ),
];

/// The batch interval of the translated jobs (batches are cut by the runner).
const BATCH_MS: i64 = 1000;

/// Runs every case with `runtime` (inside a tokio runtime), printing each failure and
/// `structured: P passed, F failed, 0 skipped`; whether every case passed but those of
/// [`EXPECTED_FAILURES`], and none of those.
pub fn run(runtime: &Runtime) -> bool {
    let path = common::root().join("../shared/conformance/structured/structured-cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error} (shared/ must sit beside the project)",
            path.display()
        )
    });
    let cases: Vec<Json> = serde_json::from_str(&text).expect("the cases file is JSON");
    let (mut passed, mut failed, mut unexpected) = (0, 0, Vec::new());
    for case in &cases {
        let id = case["id"].as_str().unwrap();
        let expected_failure = EXPECTED_FAILURES.iter().find(|(name, _)| *name == id);
        match run_case(case, runtime) {
            Ok(()) => {
                passed += 1;
                if expected_failure.is_some() {
                    unexpected.push(format!("{id} passes but is listed in EXPECTED_FAILURES"));
                }
            }
            Err(error) => {
                failed += 1;
                match expected_failure {
                    Some((_, why)) => {
                        println!("failed (expected: {why}) {id}: {}", first_line(&error))
                    }
                    None => {
                        println!("FAILED {id}: {error}");
                        unexpected.push(format!("{id} failed"));
                    }
                }
            }
        }
    }
    println!("structured: {passed} passed, {failed} failed, 0 skipped");
    if !unexpected.is_empty() {
        println!("unexpected: {}", unexpected.join("; "));
    }
    unexpected.is_empty()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// What the translation knows of a case's columns.
#[derive(Default)]
struct Columns {
    /// Event-time column aliases (`as`) to the pipeline and input column holding the
    /// number.
    aliases: HashMap<String, (String, String)>,
    /// Window and session column names (`as`), which the engine calls `window`.
    windows: Vec<String>,
    /// The pipelines a join's `left` and `right` records come from.
    joined: Option<[String; 2]>,
}

impl Columns {
    fn column(&self, name: &str) -> String {
        self.aliases
            .get(name)
            .map(|(_, column)| column.clone())
            .unwrap_or_else(|| name.to_owned())
    }

    /// Where `name` may be found in `record`: the record and its `key`, or for a join
    /// its sides (only the alias's own side for an event-time alias); `None` for a
    /// join side without a row.
    fn scopes<'a>(&self, record: &'a Value, name: &str) -> Vec<Option<&'a Value>> {
        let Some(sides) = &self.joined else {
            return vec![Some(record), record.field("key")];
        };
        let side = |index: usize| {
            let value = record.field(["left", "right"][index]);
            value.filter(|value| !matches!(value, Value::Null))
        };
        match self.aliases.get(name) {
            Some((pipeline, _)) => (0..2)
                .filter(|&index| sides[index] == *pipeline)
                .map(side)
                .collect(),
            None => vec![side(0), side(1)],
        }
    }
}

fn duration_ms(ms: &Json) -> String {
    format!("{}ms", ms.as_i64().unwrap())
}

fn window_keys(window: &Json, table: &mut toml::Table) {
    table.insert("window".into(), duration_ms(&window["duration_ms"]).into());
    table.insert("slide".into(), duration_ms(&window["slide_ms"]).into());
    if window["start_ms"].as_i64().unwrap_or(0) != 0 {
        table.insert("offset".into(), duration_ms(&window["start_ms"]).into());
    }
}

/// The manifest steps of one pipeline of the case.
fn steps(
    case: &Json,
    name: &str,
    pipeline: &Json,
    columns: &mut Columns,
) -> Result<Vec<toml::Value>, String> {
    let pipeline_name = name;
    let unit = if case["time_unit"] == "ms" { "ms" } else { "s" };
    let ops = pipeline.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out: Vec<toml::Table> = Vec::new();
    for op in ops {
        let mut table = toml::Table::new();
        let name = op["op"].as_str().unwrap();
        match name {
            "event_time" => {
                let from = op["from"].as_str().unwrap();
                let alias = op["as"].as_str().unwrap();
                columns.aliases.insert(
                    alias.to_owned(),
                    (pipeline_name.to_owned(), from.to_owned()),
                );
                table.insert("op".into(), "event_time".into());
                table.insert("field".into(), from.into());
                table.insert("unit".into(), unit.into());
                let watermark = ops
                    .iter()
                    .find(|other| other["op"] == "watermark" && other["column"] == alias);
                if let Some(watermark) = watermark {
                    table.insert("delay".into(), duration_ms(&watermark["delay_ms"]).into());
                }
            }
            "watermark" => continue,
            // Output columns are read by name: dropping the others changes nothing.
            "select" => continue,
            "derive" => {
                let function = DERIVED
                    .iter()
                    .find(|(column, sql, _)| op["as"] == *column && op["sql"] == *sql)
                    .map(|(_, _, function)| function)
                    .ok_or_else(|| format!("no UDF derives {op}"))?;
                table.insert("op".into(), "map".into());
                table.insert("udf".into(), format!("c#{function}").into());
            }
            "explode_split"
                if op["from"] == "value" && op["sep"] == " " && op["as"] == "sessionId" =>
            {
                table.insert("op".into(), "flat_map".into());
                table.insert("udf".into(), "c#explode_value_words".into());
            }
            "flat_map" if op["column"] == "value" && op["fn"] == "self_and_plus_one" => {
                table.insert("op".into(), "flat_map".into());
                table.insert("udf".into(), "c#value_self_and_plus_one".into());
            }
            "assign_window" => {
                table.insert("op".into(), "assign_window".into());
                window_keys(&op["window"], &mut table);
                columns.windows.push(op["as"].as_str().unwrap().to_owned());
            }
            "dedup" => {
                table.insert("op".into(), "dedup".into());
                if let Some(fields) = op["columns"].as_array() {
                    let fields: Vec<toml::Value> = fields
                        .iter()
                        .map(|c| columns.column(c.as_str().unwrap()).into())
                        .collect();
                    table.insert("fields".into(), fields.into());
                }
            }
            "aggregate" => {
                table.insert("op".into(), "event_aggregate".into());
                let mut keys = Vec::new();
                for key in op["keys"].as_array().unwrap() {
                    if let Some(column) = key["column"].as_str() {
                        keys.push(toml::Value::from(columns.column(column)));
                    } else if let Some(window) = key.get("window") {
                        window_keys(window, &mut table);
                        columns.windows.push(key["as"].as_str().unwrap().to_owned());
                    } else if let Some(session) = key.get("session_window") {
                        match session.get("gap_ms") {
                            Some(gap) => {
                                table.insert("session_gap".into(), duration_ms(gap).into());
                            }
                            None if session["gap_by_key"]["column"] == "sessionId" => {
                                table.insert(
                                    "session_gap_udf".into(),
                                    "c#session_gap_by_word".into(),
                                );
                            }
                            None => {
                                return Err(format!("no UDF gives the session gap of {session}"));
                            }
                        }
                        columns.windows.push(key["as"].as_str().unwrap().to_owned());
                    }
                }
                if !keys.is_empty() {
                    table.insert("keys".into(), keys.into());
                }
                let aggregates: Vec<toml::Value> = op["aggs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|agg| {
                        let function = agg["fn"].as_str().unwrap();
                        let call = match agg["column"].as_str() {
                            Some(column) => format!("{function}({})", columns.column(column)),
                            None => function.to_owned(),
                        };
                        format!("{call} as {}", agg["as"].as_str().unwrap()).into()
                    })
                    .collect();
                table.insert("aggregates".into(), aggregates.into());
                table.insert(
                    "output_mode".into(),
                    case["query"]["output_mode"].as_str().unwrap().into(),
                );
            }
            "order_by" => {
                let order: Vec<toml::Value> = op["columns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|pair| {
                        format!(
                            "{} {}",
                            pair[0].as_str().unwrap(),
                            pair[1].as_str().unwrap()
                        )
                        .into()
                    })
                    .collect();
                let aggregate = out.last_mut().ok_or("order_by without an aggregate")?;
                aggregate.insert("order_by".into(), order.into());
                continue;
            }
            other => {
                return Err(format!(
                    "the query needs `{other}`, which has no translation"
                ));
            }
        }
        out.push(table);
    }
    Ok(out.into_iter().map(toml::Value::Table).collect())
}

/// The time conditions of the join cases, as the interval `left time - right time` falls
/// in.
const TIME_RANGES: &[(&str, &str)] = &[
    ("leftTime < rightTime - 5 s", "(-inf, -5s)"),
    (
        "rightTime - 5 s <= leftTime <= rightTime + 5 s",
        "[-5s, 5s]",
    ),
];

/// The `event_join` step of a join `combine`.
fn join(combine: &Json) -> Result<toml::Value, String> {
    let mut table = toml::Table::new();
    table.insert("op".into(), "event_join".into());
    table.insert("other".into(), combine["right"].as_str().unwrap().into());
    table.insert("join".into(), combine["type"].as_str().unwrap().into());
    let names = |values: Vec<&Json>| -> toml::Value {
        values
            .into_iter()
            .map(|v| toml::Value::from(v.as_str().unwrap()))
            .collect::<Vec<_>>()
            .into()
    };
    if let Some(using) = combine["using"].as_array() {
        table.insert("keys".into(), names(using.iter().collect()));
    } else {
        let pairs = combine["on"]["keys"].as_array().unwrap();
        table.insert(
            "keys".into(),
            names(pairs.iter().map(|pair| &pair[0]).collect()),
        );
        table.insert(
            "other_keys".into(),
            names(pairs.iter().map(|pair| &pair[1]).collect()),
        );
        let time = combine["on"]["time"].as_str().unwrap();
        let range = TIME_RANGES
            .iter()
            .find(|(condition, _)| *condition == time)
            .ok_or_else(|| format!("no translation of the join condition `{time}`"))?;
        table.insert("time_range".into(), range.1.into());
    }
    Ok(table.into())
}

/// One stream table.
fn stream(name: &str, from: &str, steps: Vec<toml::Value>) -> toml::Value {
    let mut table = toml::Table::new();
    table.insert("name".into(), name.into());
    table.insert("from".into(), from.into());
    table.insert("steps".into(), steps.into());
    table.into()
}

/// The input batches of each stream, one per `add_data` and one empty after each.
fn batches(case: &Json) -> Vec<(String, Vec<String>)> {
    let inputs = case["inputs"].as_object().unwrap();
    let mut lines: Vec<(String, Vec<String>)> = inputs
        .keys()
        .map(|name| (name.clone(), Vec::new()))
        .collect();
    for action in case["actions"].as_array().unwrap() {
        if action["action"] != "add_data" {
            continue;
        }
        for (name, batches) in &mut lines {
            let columns = inputs[name.as_str()].as_array().unwrap();
            let rows = action["data"][name.as_str()]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let records: Vec<Json> = rows
                .iter()
                .map(|row| {
                    let fields: serde_json::Map<String, Json> = columns
                        .iter()
                        .zip(row.as_array().unwrap())
                        .map(|(column, value)| {
                            (column[0].as_str().unwrap().to_owned(), value.clone())
                        })
                        .collect();
                    json!({ "$struct": fields })
                })
                .collect();
            batches.push(Json::from(records).to_string());
            batches.push("[]".to_owned());
        }
    }
    lines
}

/// The case's manifest, and what its output columns are.
fn manifest(case: &Json, dir: &Path) -> Result<(String, Columns), String> {
    let query = &case["query"];
    let mut columns = Columns::default();
    let mut streams = Vec::new();
    let mut sources = Vec::new();
    for (name, lines) in batches(case) {
        let path = dir.join(format!("{name}.jsonl"));
        std::fs::write(&path, lines.join("\n")).map_err(|e| e.to_string())?;
        let mut source = toml::Table::new();
        source.insert("name".into(), format!("source_{name}").into());
        source.insert("kind".into(), "queue".into());
        source.insert("batches_file".into(), path.display().to_string().into());
        sources.push(toml::Value::Table(source));
    }
    let last = if let Some(pipelines) = query["pipelines"].as_object() {
        for (name, pipeline) in pipelines {
            let steps = steps(case, name, pipeline, &mut columns)?;
            streams.push(stream(name, &format!("source_{name}"), steps));
        }
        let combine = &query["combine"];
        if combine["op"] == "join" {
            let (left, right) = (
                combine["left"].as_str().unwrap(),
                combine["right"].as_str().unwrap(),
            );
            columns.joined = Some([left.to_owned(), right.to_owned()]);
            streams.push(stream("joined", left, vec![join(combine)?]));
            "joined".to_owned()
        } else {
            let inputs: Vec<&str> = combine["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap())
                .collect();
            let mut union = toml::Table::new();
            union.insert("op".into(), "union".into());
            union.insert(
                "with".into(),
                inputs[1..]
                    .iter()
                    .map(|&i| toml::Value::from(i))
                    .collect::<Vec<_>>()
                    .into(),
            );
            let mut after = vec![toml::Value::Table(union)];
            after.extend(steps(case, "combined", &query["pipeline"], &mut columns)?);
            streams.push(stream("combined", inputs[0], after));
            "combined".to_owned()
        }
    } else {
        let steps = steps(case, "in", &query["pipeline"], &mut columns)?;
        streams.push(stream("query", "source_in", steps));
        "query".to_owned()
    };
    let mut job = toml::Table::new();
    job.insert("name".into(), case["id"].as_str().unwrap().into());
    job.insert("batch_interval".into(), format!("{BATCH_MS}ms").into());
    job.insert("partitions".into(), 2.into());
    let mut udfs = toml::Table::new();
    udfs.insert(
        "c".into(),
        common::udf("conformance").display().to_string().into(),
    );
    job.insert("udfs".into(), udfs.into());
    let mut checkpoint = toml::Table::new();
    checkpoint.insert(
        "dir".into(),
        dir.join("checkpoint").display().to_string().into(),
    );
    checkpoint.insert("every".into(), 1.into());
    job.insert("checkpoint".into(), checkpoint.into());
    let mut event_time = toml::Table::new();
    if let Some(policy) = case["conf"]["spark.sql.streaming.multipleWatermarkPolicy"].as_str() {
        event_time.insert("watermark_policy".into(), policy.into());
    }
    if let Some(no_data) = case["conf"]["spark.sql.streaming.noDataMicroBatches.enabled"].as_bool()
    {
        event_time.insert("no_data_batches".into(), no_data.into());
    }
    job.insert("event_time".into(), event_time.into());
    job.insert("sources".into(), sources.into());
    job.insert("streams".into(), streams.into());
    let mut sink = toml::Table::new();
    sink.insert("name".into(), "out".into());
    sink.insert("from".into(), last.into());
    sink.insert("kind".into(), "collect".into());
    job.insert("sinks".into(), vec![toml::Value::Table(sink)].into());
    Ok((toml::to_string(&job).unwrap(), columns))
}

/// What one batch did.
struct Ran {
    rows: Vec<Json>,
    report: BatchReport,
}

fn run_case(case: &Json, runtime: &Runtime) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (text, columns) = manifest(case, dir.path())?;
    let parsed = sluice::manifest::parse(&text, &dir.path().join("query.toml"), runtime);
    if let Some(error) = case.get("expect_error") {
        let message = match parsed {
            Ok(_) => {
                return Err(format!(
                    "the manifest was accepted, Spark refuses it\n{text}"
                ));
            }
            Err(error) => error.to_string().to_lowercase(),
        };
        for part in error["contains"].as_array().unwrap() {
            let part = part.as_str().unwrap().to_lowercase();
            if !message.contains(&part) {
                return Err(format!("the refusal lacks `{part}`: {message}\n{text}"));
            }
        }
        return Ok(());
    }
    let config = parsed.map_err(|e| format!("{e}\n{text}"))?;
    check_actions(case, &config, &columns, runtime).map_err(|error| format!("{error}\n{text}"))?;
    let Some((restarted, after)) = with_restart(case) else {
        return Ok(());
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (text, columns) = manifest(&restarted, dir.path())?;
    let config = sluice::manifest::parse(&text, &dir.path().join("query.toml"), runtime)
        .map_err(|e| format!("{e}\n{text}"))?;
    check_actions(&restarted, &config, &columns, runtime)
        .map_err(|error| format!("with a restart after action {after}: {error}\n{text}"))
}

/// A case without a `restart` action, with one inserted after its middle `add_data` (and
/// the checks that follow it), as the DStream conformance cases are each also run through
/// a restart; with the action's position. Only single-input cases: a restart starts each
/// input's own watermark again from "no data yet" (as Spark), which the vectors of two
/// inputs were not recorded with.
fn with_restart(case: &Json) -> Option<(Json, usize)> {
    let actions = case["actions"].as_array()?;
    if case["inputs"].as_object()?.len() != 1 || actions.iter().any(|a| a["action"] == "restart") {
        return None;
    }
    let adds: Vec<usize> = (0..actions.len())
        .filter(|&i| actions[i]["action"] == "add_data")
        .collect();
    let next_add = *adds.get(adds.len().div_ceil(2))?;
    let mut restarted = case.clone();
    restarted["actions"]
        .as_array_mut()?
        .insert(next_add, json!({"action": "restart"}));
    Some((restarted, next_add))
}

/// Runs the actions, checking each `check` against the batches since the previous one.
fn check_actions(
    case: &Json,
    config: &JobConfig,
    columns: &Columns,
    runtime: &Runtime,
) -> Result<(), String> {
    let unit_ms = if case["time_unit"] == "ms" { 1 } else { 1000 };
    let mut runner = Stepper::start(config, runtime)?;
    let mut since: Vec<Ran> = Vec::new();
    let mut last_ran: Option<Vec<Json>> = None;
    let mut last_data: Option<BatchReport> = None;
    let mut last_step: Option<BatchReport> = None;
    let complete = case["query"]["output_mode"] == "complete";
    for (index, action) in case["actions"].as_array().unwrap().iter().enumerate() {
        let at = format!("action {} ({})", index + 1, action["action"]);
        match action["action"].as_str().unwrap() {
            "add_data" => {
                let mut step = Vec::new();
                for _ in 0..2 {
                    let (records, report) =
                        runner.batch("out").map_err(|e| format!("{at}: {e:#}"))?;
                    if !report.ran {
                        continue;
                    }
                    let rows = records
                        .iter()
                        .map(|record| row(record, &case["query"]["output"], columns, unit_ms))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("{at}: {e}"))?;
                    if report.has_data {
                        last_data = Some(report.clone());
                    }
                    last_ran = Some(rows.clone());
                    step.push(Ran { rows, report });
                }
                last_step = step.last().map(|ran| ran.report.clone());
                since.extend(step);
            }
            "restart" => runner = Stepper::start(config, runtime)?,
            "check" => {
                check(
                    case,
                    action,
                    &since,
                    last_ran.as_deref(),
                    last_data.as_ref(),
                    last_step.as_ref(),
                    complete,
                )
                .map_err(|e| format!("{at}: {e}"))?;
                since.clear();
            }
            other => return Err(format!("{at}: unknown action `{other}`")),
        }
    }
    Ok(())
}

fn sorted(rows: &[Json]) -> Vec<String> {
    let mut texts: Vec<String> = rows.iter().map(Json::to_string).collect();
    texts.sort();
    texts
}

/// Per stateful step, nearest the sink first (Spark's progress order).
fn per_step(
    report: &BatchReport,
    value: impl Fn(&sluice::event_time::StepReport) -> usize,
) -> Json {
    let values: Vec<Json> = report
        .steps
        .iter()
        .rev()
        .map(|step| json!(value(step)))
        .collect();
    match values.as_slice() {
        [one] => one.clone(),
        _ => Json::from(values),
    }
}

fn check(
    case: &Json,
    action: &Json,
    since: &[Ran],
    last_ran: Option<&[Json]>,
    last_data: Option<&BatchReport>,
    last_step: Option<&BatchReport>,
    complete: bool,
) -> Result<(), String> {
    if let Some(expected) = action["expected"].as_array() {
        let got: Vec<Json> = if complete {
            last_ran.unwrap_or_default().to_vec()
        } else {
            since.iter().flat_map(|ran| ran.rows.clone()).collect()
        };
        let same = if case["ordered"] == true {
            got == *expected
        } else {
            sorted(&got) == sorted(expected)
        };
        if !same {
            return Err(format!(
                "rows {}, expected {}",
                Json::from(got),
                Json::from(expected.clone())
            ));
        }
    }
    let compare = |what: &str, got: Json, want: &Json| {
        if got == *want {
            Ok(())
        } else {
            Err(format!("{what} {got}, expected {want}"))
        }
    };
    if let Some(want) = action.get("state_rows") {
        let report = last_step.ok_or("no batch ran")?;
        compare("state rows", per_step(report, |step| step.state_rows), want)?;
    }
    if let Some(want) = action.get("dropped_by_watermark") {
        let report = last_data.ok_or("no batch had data")?;
        compare(
            "rows dropped by watermark",
            per_step(report, |step| step.rows_dropped_by_watermark),
            want,
        )?;
    }
    if let Some(want) = action.get("batch_watermark_ms") {
        let report = last_data.ok_or("no batch had data")?;
        compare("batch watermark", json!(report.watermark_ms), want)?;
    }
    if let Some(want) = action.get("event_time_stats") {
        let stats = last_data
            .and_then(|report| report.event_time)
            .ok_or("no event-time stats")?;
        let got = json!({"min": stats.min, "max": stats.max, "avg": stats.avg});
        let same = ["min", "max", "avg"].iter().all(|key| {
            let (a, b) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
            (a - b).abs() <= 1e-9 * b.abs().max(1.0)
        });
        if !same {
            return Err(format!("event-time stats {got}, expected {want}"));
        }
    }
    if let Some(want) = action["batches"].as_array() {
        let got: Vec<Json> = since
            .iter()
            .map(|ran| {
                json!({
                    "has_data": ran.report.has_data,
                    "watermark_ms": ran.report.watermark_ms,
                    "rows": ran.rows,
                    "state_rows": per_step(&ran.report, |step| step.state_rows),
                })
            })
            .collect();
        compare("batches", Json::from(got), &Json::from(want.clone()))?;
    }
    Ok(())
}

/// An output record as the case's row: each output column by field name.
fn row(record: &Value, output: &Json, columns: &Columns, unit_ms: i64) -> Result<Json, String> {
    let find = |name: &str| -> Result<Value, String> {
        if let Some((window, bound)) = name.split_once('.')
            && columns.windows.iter().any(|w| w == window)
        {
            let found = columns
                .scopes(record, window)
                .into_iter()
                .flatten()
                .find_map(|scope| scope.field("window")?.field(bound).cloned());
            return match found {
                Some(Value::Int(ms)) => Ok(Value::Int(ms.div_euclid(unit_ms))),
                _ => Err(format!("no `window.{bound}` in {}", record.to_json())),
            };
        }
        let column = columns.column(name);
        let scopes = columns.scopes(record, name);
        let found = scopes
            .iter()
            .flatten()
            .find_map(|scope| scope.field(&column).cloned());
        match found {
            Some(value) => Ok(value),
            // A column of an outer join's missing side is null.
            None if scopes.iter().any(Option::is_none) => Ok(Value::Null),
            None => Err(format!("no field `{column}` in {}", record.to_json())),
        }
    };
    let values = output
        .as_array()
        .unwrap()
        .iter()
        .map(|column| match column {
            Json::String(name) => find(name),
            // `session.end - session.start`, the one computed column of the cases.
            spec => {
                let window = &columns.windows[0];
                match (
                    find(&format!("{window}.end"))?,
                    find(&format!("{window}.start"))?,
                ) {
                    (Value::Int(end), Value::Int(start)) => Ok(Value::Int(end - start)),
                    _ => Err(format!("cannot compute {spec}")),
                }
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json::from(
        values
            .iter()
            .map(|value| serde_json::from_str(&value.to_json()).unwrap())
            .collect::<Vec<Json>>(),
    ))
}
