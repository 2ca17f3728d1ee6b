//! The web UI of `sluice run --ui`, in a real browser (headless Chromium over the
//! DevTools protocol): the page's script draws what the JSON API says, every chart plots
//! every batch, and tenant text shows as text.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::browser::Browser;
use common::observe::{get_json, ui_address};
use common::run::Run;
use common::wait;

const BATCHES: u64 = 40;
/// A job name and a record that are HTML, which the page must show as text.
const EVIL_NAME: &str = "<script>document.title='named'</script><b>bold</b>";
const EVIL_RECORD: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

fn write(dir: &Path, file: &str, text: String) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_job_page_charts_every_batch_and_shows_tenant_text_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = common::udf("faulty");
    let counted = write(
        dir.path(),
        "counted.toml",
        format!(
            r#"name = "counted"
batch_interval = "20ms"

[[sources]]
name = "numbers"
kind = "generator"
rate = 5000

[[streams]]
name = "m"
from = "numbers"
steps = [{{ op = "map", udf = "{}#chatty" }}, {{ op = "count" }}]

[[sinks]]
from = "m"
kind = "collect"
name = "out"
"#,
            faulty.display()
        ),
    );
    let evil = write(
        dir.path(),
        "evil.toml",
        format!(
            "name = {}\nbatch_interval = \"20ms\"\n[[sources]]\nname = \"n\"\nkind = \"queue\"\nbatches = [[{}]]\n[[streams]]\nname = \"m\"\nfrom = \"n\"\nsteps = [{{ op = \"map\", udf = \"{}#blurt\" }}]\n[[sinks]]\nfrom = \"m\"\nkind = \"collect\"\nname = \"out\"\n",
            toml_string(EVIL_NAME),
            toml_string(EVIL_RECORD),
            faulty.display()
        ),
    );
    let mut run = Run::start(
        &counted,
        &[
            evil.to_str().unwrap(),
            "--ui",
            "127.0.0.1:0",
            "--batches",
            &BATCHES.to_string(),
            "--ui-linger",
        ],
    );
    let address = ui_address(&mut run);
    let base = format!("http://{address}");
    let mut browser = Browser::start();

    // The job page: its batch count reaches the job's, and every chart plots every batch.
    browser.open(&format!("{base}/jobs/counted"));
    let mut page_batches = serde_json::Value::Null;
    let mut job_batches = serde_json::Value::Null;
    let caught_up = wait::within(Duration::from_secs(20), || {
        job_batches = get_json(&format!("{base}/v1/jobs/counted/overview"))["batches"].clone();
        page_batches = browser.eval("document.getElementById('batches')?.dataset.batches ?? null");
        job_batches == BATCHES && page_batches.as_str() == Some(&BATCHES.to_string()[..])
    });
    assert!(
        caught_up,
        "the page shows {page_batches} batches, the job has {job_batches}"
    );
    let points = browser.eval(
        "[...document.querySelectorAll('.chart')].map(chart => [chart.id, chart.dataset.points, chart.querySelectorAll('canvas').length])",
    );
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 8, "4 timelines and 4 histograms: {points:?}");
    for chart in points {
        assert_eq!(chart[1], BATCHES.min(1000).to_string(), "{chart}");
        assert_eq!(chart[2], 1, "uPlot drew {chart} on a canvas");
    }
    let steps = browser.eval("document.querySelectorAll('#steps tbody tr').length");
    assert_eq!(steps, 2, "one row per step");
    let batches = get_json(&format!("{base}/v1/jobs/counted/batches?last=5"));
    assert_eq!(batches["batches"].as_array().unwrap().len(), 5);
    let last = &batches["batches"][4];
    assert_eq!(last["number"], BATCHES);
    let shot = browser.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(common::root().join("target/ui-job.png"), shot).unwrap();

    // The failed job's page: its name and its UDF's panic (with its stderr) as text.
    browser.open(&format!("{base}/jobs/{}", browser_encode(EVIL_NAME)));
    let mut failure = serde_json::Value::Null;
    let shown = wait::within(Duration::from_secs(20), || {
        failure = browser.eval("document.getElementById('failure-text')?.textContent ?? null");
        failure
            .as_str()
            .is_some_and(|text| text.contains(EVIL_RECORD))
    });
    assert!(shown, "the failure shows the record as text: {failure}");
    assert_eq!(
        browser.eval("document.getElementById('job-name').textContent"),
        EVIL_NAME
    );
    assert_eq!(
        browser.eval("document.title"),
        "Sluice",
        "no tenant script ran"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('script').length"),
        2,
        "no script element but the UI's own"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('img, b').length"),
        0
    );

    // The job list shows both jobs, the tenant's name as text.
    browser.open(&format!("{base}/"));
    let mut names = serde_json::Value::Null;
    let listed = wait::within(Duration::from_secs(20), || {
        names = browser.eval(
            "[...document.querySelectorAll('tbody td:first-child a')].map(a => a.textContent)",
        );
        names.as_array().is_some_and(|names| names.len() == 2)
    });
    assert!(listed, "{names}");
    assert_eq!(names, serde_json::json!(["counted", EVIL_NAME]));
    assert_eq!(browser.eval("document.title"), "Sluice");

    run.signal("TERM");
    let (status, log) = run.finish();
    assert_eq!(status.code(), Some(1), "the evil job failed: {log:#?}");
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// `text` as one path segment (JavaScript's encodeURIComponent).
fn browser_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
