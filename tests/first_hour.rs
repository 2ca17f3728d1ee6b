//! The first hour of a new user: `sluice new`, UDF crates built outside the checkout with
//! a shared build cache, and the error messages that say what was meant.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::sluice;

/// A `sluice` copied out of the checkout, run with a fresh `HOME` in a folder outside it:
/// a new user's machine, but for the Rust toolchain already installed.
struct Machine {
    dir: tempfile::TempDir,
    bin: PathBuf,
    toolchain: [(&'static str, PathBuf); 2],
}

impl Machine {
    fn new() -> Self {
        let real_home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
        let toolchain = [
            (
                "RUSTUP_HOME",
                std::env::var_os("RUSTUP_HOME")
                    .map_or_else(|| real_home.join(".rustup"), PathBuf::from),
            ),
            (
                "CARGO_HOME",
                std::env::var_os("CARGO_HOME")
                    .map_or_else(|| real_home.join(".cargo"), PathBuf::from),
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        assert!(
            !dir.path().starts_with(common::root()),
            "the temporary folder is outside the checkout"
        );
        let bin = dir.path().join("bin/sluice");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_sluice"), &bin).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Self {
            dir,
            bin,
            toolchain,
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A folder of the machine, made if missing.
    fn folder(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    fn command(&self, program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(dir).env("HOME", self.home());
        for variable in [
            "XDG_DATA_HOME",
            "XDG_CACHE_HOME",
            "SLUICE_BUILD_DIR",
            "SLUICE_CACHE_DIR",
            "CARGO_TARGET_DIR",
        ] {
            command.env_remove(variable);
        }
        for (name, value) in &self.toolchain {
            command.env(name, value);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths: Vec<PathBuf> = vec![
            self.bin.parent().unwrap().to_owned(),
            self.toolchain[1].1.join("bin"),
        ];
        paths.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(paths).unwrap());
        command
    }

    /// Runs `sluice ARGS` in `dir`, which must succeed.
    fn sluice(&self, dir: &Path, args: &[&str]) -> Output {
        let output = self.command(&self.bin, dir).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "sluice {args:?} in {}: {}",
            dir.display(),
            text(&output)
        );
        output
    }

    /// The shared build cache of `sluice udf build`.
    fn build_cache(&self) -> PathBuf {
        self.home().join(".cache/sluice/udf-build")
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The records a `print` sink printed, counted.
fn printed(stdout: &[u8]) -> BTreeMap<String, usize> {
    let mut records = BTreeMap::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        if line.starts_with('[') {
            *records.entry(line.to_owned()).or_default() += 1;
        }
    }
    records
}

/// Every file under `dir` but those in `target/`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().unwrap() != "target" {
                found.extend(files(&path));
            }
        } else {
            found.push(path);
        }
    }
    found
}

/// From a crate made by `sluice new` to its job's output, outside the checkout; then a
/// second crate that compiles none of the SDK again, and two crates of the same name.
#[test]
fn a_new_crate_builds_tests_and_runs_outside_the_checkout() {
    let machine = Machine::new();
    let work = machine.folder("work");

    let created = machine.sluice(&work, &["new", "demo"]);
    assert!(
        String::from_utf8_lossy(&created.stdout).contains("sluice udf build demo"),
        "{}",
        text(&created)
    );
    let demo = work.join("demo");
    let sdk = machine
        .home()
        .join(".local/share/sluice/sdk")
        .join(env!("CARGO_PKG_VERSION"));
    let checkout = common::root();
    for file in files(&demo).into_iter().chain(files(&sdk)) {
        let contents = std::fs::read_to_string(&file).unwrap();
        assert!(
            !contents.contains(checkout.to_str().unwrap()),
            "{} names the checkout",
            file.display()
        );
    }

    let built = machine.sluice(&work, &["udf", "build", "demo"]);
    let component = demo.join("target/wasm32-wasip2/release/demo.wasm");
    assert_eq!(
        String::from_utf8_lossy(&built.stdout).trim(),
        component.to_str().unwrap(),
        "{}",
        text(&built)
    );
    let first_component = std::fs::read(&component).unwrap();

    let ran = machine.sluice(&work, &["run", "demo/job.toml"]);
    let expected: BTreeMap<String, usize> = [
        "[\"to\",2]",
        "[\"be\",2]",
        "[\"or\",1]",
        "[\"not\",1]",
        "[\"that\",1]",
        "[\"is\",1]",
        "[\"the\",1]",
        "[\"question\",1]",
        "[\"to\",2]",
        "[\"sleep\",1]",
        "[\"perchance\",1]",
        "[\"dream\",1]",
    ]
    .iter()
    .fold(BTreeMap::new(), |mut counts, line| {
        *counts.entry(line.to_string()).or_default() += 1;
        counts
    });
    assert_eq!(printed(&ran.stdout), expected, "{}", text(&ran));

    let cargo = machine.toolchain[1].1.join("bin/cargo");
    let tested = machine
        .command(&cargo, &demo)
        .args(["test", "--release"])
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "the crate's own cargo test: {}",
        text(&tested)
    );
    assert!(
        String::from_utf8_lossy(&tested.stdout).contains("3 passed"),
        "{}",
        text(&tested)
    );

    // A second crate, elsewhere, built by cargo in the shared cache: the SDK, wit-bindgen
    // and its macro are fresh.
    let elsewhere = machine.folder("elsewhere");
    machine.sluice(&elsewhere, &["new", "scorer"]);
    let second = machine
        .command(&cargo, &elsewhere.join("scorer"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json",
        ])
        .env("CARGO_TARGET_DIR", machine.build_cache())
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", text(&second));
    let mut freshness = BTreeMap::new();
    for line in String::from_utf8_lossy(&second.stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(line).unwrap();
        if message["reason"] == "compiler-artifact" {
            let name = message["target"]["name"].as_str().unwrap().to_owned();
            freshness.insert(name, message["fresh"].as_bool().unwrap());
        }
    }
    for shared in [
        "sluice_sdk",
        "sluice_abi",
        "wit_bindgen",
        "wit_bindgen_rust_macro",
    ] {
        assert_eq!(
            freshness.get(shared),
            Some(&true),
            "{shared} compiled again: {freshness:?}"
        );
    }
    assert_eq!(freshness.get("scorer"), Some(&false));

    // Another `demo`, whose tokenize upper-cases: each crate keeps its own component.
    let other = machine.folder("other");
    machine.sluice(&other, &["new", "demo"]);
    let source = other.join("demo/src/lib.rs");
    let changed = std::fs::read_to_string(&source)
        .unwrap()
        .replace("str::to_lowercase", "str::to_uppercase");
    std::fs::write(&source, changed).unwrap();
    machine.sluice(&other, &["udf", "build", "demo"]);
    machine.sluice(&work, &["udf", "build", "demo"]);
    let other_component =
        std::fs::read(other.join("demo/target/wasm32-wasip2/release/demo.wasm")).unwrap();
    assert_ne!(
        other_component, first_component,
        "two crates named demo got the same component"
    );
    assert_eq!(
        std::fs::read(&component).unwrap(),
        first_component,
        "rebuilding the first demo gave it the other's component"
    );
    let ran = machine.sluice(&other, &["run", "demo/job.toml"]);
    assert!(
        printed(&ran.stdout).contains_key("[\"TO\",2]"),
        "{}",
        text(&ran)
    );

    // A misspelt kind in `udfs!` lists the kinds.
    let source = work.join("demo/src/lib.rs");
    let misspelt = std::fs::read_to_string(&source)
        .unwrap()
        .replace("flat_map tokenize", "flatmap tokenize");
    std::fs::write(&source, misspelt).unwrap();
    let failed = machine
        .command(&machine.bin, &work)
        .args(["udf", "build", "demo"])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(
            "unknown UDF kind `flatmap` for `tokenize`: the kinds are map, flat_map, filter"
        ),
        "{}",
        text(&failed)
    );
}

/// Runs `sluice ARGS` from the checkout's tests, expecting it to fail; its stderr.
fn refused(args: &[&str]) -> String {
    let output = sluice().args(args).output().unwrap();
    assert!(
        !output.status.success(),
        "sluice {args:?} succeeded: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A word count manifest in `dir` with `replace` applied to it, checked.
fn check_wordcount(dir: &Path, replace: (&str, &str)) -> String {
    let udf = common::udf("wordcount");
    let manifest = format!(
        r#"name = "wc"
batch_interval = "1s"

[udfs]
wc = "{}"

[[sources]]
name = "lines"
kind = "queue"
batches = [["a b"]]

[[streams]]
name = "counts"
from = "lines"
steps = [
  {{ op = "flat_map", udf = "wc#tokenize" }},
  {{ op = "count_by_value" }},
]

[[sinks]]
from = "counts"
kind = "print"
"#,
        udf.display()
    );
    assert!(
        manifest.contains(replace.0),
        "{} is in the manifest",
        replace.0
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, manifest.replacen(replace.0, replace.1, 1)).unwrap();
    refused(&["check", path.to_str().unwrap()])
}

/// Misspellings in every category get the name meant; far-off names get no guess.
#[test]
fn misspellings_are_answered_with_the_name_meant() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            ("op = \"count_by_value\"", "op = \"countByValue\""),
            Some("count_by_value"),
        ),
        (
            ("op = \"count_by_value\"", "op = \"count_by_valeu\""),
            Some("count_by_value"),
        ),
        (
            ("batch_interval", "batch_intervall"),
            Some("batch_interval"),
        ),
        (("wc#tokenize", "wc#tokenise"), Some("tokenize")),
        (("wc#tokenize", "wcc#tokenize"), Some("wc")),
        (("kind = \"print\"", "kind = \"prnt\""), Some("print")),
        (("kind = \"queue\"", "kind = \"queu\""), Some("queue")),
        (("from = \"lines\"", "form = \"lines\""), Some("from")),
        (("op = \"count_by_value\"", "op = \"sort_by_key\""), None),
        (("wc#tokenize", "wc#split_sentences"), None),
        (("wc#tokenize", "zzz#tokenize"), None),
        (("kind = \"print\"", "kind = \"elasticsearch\""), None),
        (("batch_interval", "checkpoint_every"), None),
    ];
    for (replace, suggestion) in cases {
        let error = check_wordcount(dir.path(), replace);
        match suggestion {
            Some(name) => assert!(
                error.contains(&format!("did you mean `{name}`?")),
                "{replace:?}: {error}"
            ),
            None => assert!(!error.contains("did you mean"), "{replace:?}: {error}"),
        }
    }
}

/// The weak messages of the first hour, each as it now reads.
#[test]
fn first_hour_messages_say_what_is_wrong_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // Not a component: one line, not a Debug dump of magic bytes.
    std::fs::write(path("notes.wasm"), "plain text").unwrap();
    let error = refused(&["udf", "inspect", &path("notes.wasm")]);
    assert!(error.contains("is not a WebAssembly component"), "{error}");
    assert!(
        !error.contains("0x61") && error.trim().lines().count() == 1,
        "{error}"
    );
    std::fs::write(path("module.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let error = refused(&["udf", "inspect", &path("module.wasm")]);
    assert!(
        error.contains("is a core WebAssembly module, not a component"),
        "{error}"
    );

    // A missing UDF: the advice once, the path as written.
    let manifest = dir.path().join("job.toml");
    std::fs::write(
        &manifest,
        "name = \"j\"\nbatch_interval = \"1s\"\n[udfs]\nwc = \"../sluice/missing.wasm\"\n\
         [[sources]]\nname = \"s\"\nkind = \"queue\"\nbatches = [[\"a\"]]\n\
         [[streams]]\nname = \"w\"\nfrom = \"s\"\nsteps = [{ op = \"map\", udf = \"wc#f\" }]\n\
         [[sinks]]\nfrom = \"w\"\nkind = \"print\"\n",
    )
    .unwrap();
    let error = refused(&["check", manifest.to_str().unwrap()]);
    assert_eq!(error.matches("sluice udf build").count(), 1, "{error}");
    assert!(!error.contains("./.."), "{error}");

    // No such crate folder: not "cannot run cargo".
    let error = refused(&["udf", "build", &path("nope")]);
    assert!(
        error.contains("is not a folder") && !error.contains("cannot run cargo"),
        "{error}"
    );
    std::fs::create_dir(path("empty")).unwrap();
    let error = refused(&["udf", "build", &path("empty")]);
    assert!(error.contains("has no Cargo.toml"), "{error}");

    // Records that are not pairs reaching a keyed step are refused at check time when a
    // queue source holds them; pairs pass.
    let keyed = |batches: &str| {
        format!(
            "name = \"j\"\nbatch_interval = \"1s\"\n\
             [[sources]]\nname = \"s\"\nkind = \"queue\"\nbatches = {batches}\n\
             [[streams]]\nname = \"w\"\nfrom = \"s\"\nsteps = [{{ op = \"distinct\" }}, {{ op = \"group_by_key\" }}]\n\
             [[sinks]]\nfrom = \"w\"\nkind = \"print\"\n"
        )
    };
    std::fs::write(&manifest, keyed("[[[\"a\", 1]], [\"b\"]]")).unwrap();
    let error = refused(&["check", manifest.to_str().unwrap()]);
    assert!(
        error.contains(
            "`group_by_key` reads key-value pairs, but the queue source `s` has the record \"b\""
        ),
        "{error}"
    );
    std::fs::write(&manifest, keyed("[[[\"a\", 1]], [[\"b\", 2]]]")).unwrap();
    let output = sluice()
        .args(["check", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));

    // A folder that is not a checkpoint directory fails.
    let error = refused(&["checkpoint", "inspect", &path("empty")]);
    assert!(error.contains("is not a checkpoint directory"), "{error}");

    // Where check cannot know the records, a step failing at run time is named with the
    // manifest's file and line, as load-time errors are.
    std::fs::write(path("words.txt"), "a\nb\n").unwrap();
    std::fs::write(
        &manifest,
        format!(
            "name = \"j\"\nbatch_interval = \"100ms\"\n\
             [[sources]]\nname = \"s\"\nkind = \"file\"\npath = \"{}\"\n\
             [[streams]]\nname = \"w\"\nfrom = \"s\"\nsteps = [\n\
             {{ op = \"distinct\" }},\n\
             {{ op = \"group_by_key\" }},\n\
             ]\n[[sinks]]\nfrom = \"w\"\nkind = \"print\"\n",
            path("words.txt")
        ),
    )
    .unwrap();
    let error = refused(&["run", manifest.to_str().unwrap()]);
    assert!(
        error.contains(&format!(
            "stream `w` step 2 (group_by_key) at {}:12",
            manifest.display()
        )),
        "{error}"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = sluice().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}: {}", text(&output));
        let script = String::from_utf8_lossy(&output.stdout);
        for word in ["udf", "checkpoint", "new"] {
            assert!(script.contains(word), "{shell} completions lack `{word}`");
        }
    }
}

/// `sluice udf test FUNCTION` with `input` on stdin and `flags`: exit code, stdout, stderr.
fn udf_test(function: &str, input: &str, flags: &[&str]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = sluice()
        .args(["udf", "test"])
        .args(flags)
        .arg(function)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn function(component: &str, name: &str) -> String {
    format!("{}#{name}", common::udf(component).display())
}

/// Every function kind tried on sample lines, one JSON line per result.
#[test]
fn udf_test_runs_every_kind_on_json_lines() {
    let cases = [
        (
            ("wordcount", "with_one"),
            "\"be\"\n\"or\"\n",
            "{\"$tuple\":[\"be\",1]}\n{\"$tuple\":[\"or\",1]}\n",
        ),
        (
            ("wordcount", "tokenize"),
            "\"To be\"\n\"\"\n",
            "[\"to\",\"be\"]\n[]\n",
        ),
        (
            ("wordcount", "is_long_word"),
            "\"hello\"\n\"is\"\n",
            "true\nfalse\n",
        ),
        (("conformance", "partition_sum"), "1\n2\n3\n", "6\n"),
        (("wordcount", "sum"), "[1, 2, 3]\n[5]\n", "6\n5\n"),
        (
            ("transactions", "add_to_average"),
            "[{\"$tuple\": [1.5, 1]}, 2.5, 1.0]\n",
            "{\"$tuple\":[5.0,3]}\n",
        ),
        (
            ("wordcount", "running_count"),
            "{\"values\": [1, 2], \"state\": 5}\n{\"values\": [1], \"state\": null}\n",
            "{\"state\":8}\n{\"state\":1}\n",
        ),
        (
            ("wordcount", "count_each"),
            "{\"key\": \"a\", \"values\": [1, 1], \"state\": 3, \"timing_out\": false, \"batch_time_ms\": 1000}\n",
            "{\"emitted\":[{\"$tuple\":[\"a\",4]},{\"$tuple\":[\"a\",5]}],\"state\":5}\n",
        ),
    ];
    for ((component, name), input, expected) in cases {
        let (code, stdout, stderr) = udf_test(&function(component, name), input, &[]);
        assert_eq!((code, stdout.as_str()), (0, expected), "{name}: {stderr}");
    }
}

/// A panic fails its line, not the others; a loop is stopped at the timeout given; both
/// exit with 1; the function's output is shown.
#[test]
fn udf_test_reports_panics_timeouts_and_output() {
    let (code, stdout, stderr) = udf_test(&function("faulty", "panic_on_three"), "1\n3\n4\n", &[]);
    assert_eq!((code, stdout.as_str()), (1, "1\n4\n"), "{stderr}");
    assert!(
        stderr.contains("input line 2") && stderr.contains("three is not allowed"),
        "{stderr}"
    );

    let (code, _, stderr) = udf_test(
        &function("faulty", "spin"),
        "1\n",
        &["--call-timeout", "200ms"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("call timeout of 200 ms"), "{stderr}");

    let (code, stdout, stderr) = udf_test(&function("faulty", "chatty"), "7\n", &[]);
    assert_eq!((code, stdout.as_str()), (0, "7\n"), "{stderr}");
    assert!(
        stderr.contains("chatty saw 7") && stderr.contains("chatty warns about 7"),
        "{stderr}"
    );

    let (code, _, stderr) = udf_test(&function("wordcount", "tokenise"), "", &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("did you mean `tokenize`?"), "{stderr}");
    let (code, _, stderr) = udf_test(&function("wordcount", "sum"), "{\"a\": 1}\n", &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("a reduce line is a JSON array"), "{stderr}");
}

/// Runs a command under a pseudo-terminal of 160 columns (Python's `pty`), copying what
/// the terminal shows to stdout; SIGINT and SIGTERM are passed on to the command.
const UNDER_PTY: &str = r#"
import fcntl, os, pty, signal, struct, sys, termios
pid, master = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    os.execv(sys.argv[1], sys.argv[1:])
for stop in (signal.SIGINT, signal.SIGTERM):
    signal.signal(stop, lambda number, frame: os.kill(pid, number))
while True:
    try:
        shown = os.read(master, 65536)
    except InterruptedError:
        continue
    except OSError:
        break
    if not shown:
        break
    sys.stdout.buffer.write(shown)
    sys.stdout.buffer.flush()
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)
"#;

/// What a terminal shows after `transcript`: its lines, with `CR`, `LF` and "erase line"
/// (`ESC [ 2 K`) obeyed, other escape sequences (colours) dropped, and each character
/// written over the one at the cursor.
fn screen(transcript: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut column) = (0, 0);
    let mut chars = transcript.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => column = 0,
            '\n' => {
                row += 1;
                if row == lines.len() {
                    lines.push(Vec::new());
                }
            }
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut parameters = String::new();
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        if c == 'K' && parameters == "2" {
                            lines[row].clear();
                        }
                        break;
                    }
                    parameters.push(c);
                }
            }
            c => {
                let line = &mut lines[row];
                if line.len() <= column {
                    line.resize(column, ' ');
                    line.push(c);
                } else {
                    line[column] = c;
                }
                column += 1;
            }
        }
    }
    lines
        .into_iter()
        .map(|line| line.into_iter().collect())
        .collect()
}

/// The README's socket word count, with a step slow enough to keep one batch in flight
/// for a second, run on a terminal: every line the print sink writes starts at column 0
/// and stands alone, the status line is erased before other output and drawn again after
/// it, and while the slow batch runs, the status line says where it is.
#[test]
fn on_a_terminal_printed_lines_start_at_column_0_under_the_status_line() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let manifest = format!(
        r#"name = "socket-wordcount"
batch_interval = "200ms"
partitions = 1

[udfs]
wordcount = "{}"
faulty = "{}"

[[sources]]
name = "lines"
kind = "socket"
host = "127.0.0.1"
port = {port}

[[streams]]
name = "counts"
from = "lines"
steps = [
  {{ op = "map", udf = "faulty#linger" }},
  {{ op = "flat_map", udf = "wordcount#tokenize" }},
  {{ op = "count_by_value" }},
]

[[sinks]]
from = "counts"
kind = "print"
"#,
        common::udf("wordcount").display(),
        common::udf("faulty").display()
    );
    std::fs::write(dir.path().join("job.toml"), manifest).unwrap();
    let mut child = Command::new("python3")
        .args([
            "-c",
            UNDER_PTY,
            env!("CARGO_BIN_EXE_sluice"),
            "run",
            "job.toml",
        ])
        .env(
            "SLUICE_CACHE_DIR",
            common::root().join("target/sluice-cache"),
        )
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let transcript = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let reader = {
        let transcript = transcript.clone();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(read @ 1..) = std::io::Read::read(&mut stdout, &mut buffer) {
                transcript
                    .lock()
                    .unwrap()
                    .extend_from_slice(&buffer[..read]);
            }
        })
    };
    let shows = |text: &str| String::from_utf8_lossy(&transcript.lock().unwrap()).contains(text);
    // A word's count over every batch printed (lines sent at once may still be cut apart).
    let counted = |word: &str| -> u64 {
        let prefix = format!("[\"{word}\",");
        String::from_utf8_lossy(&transcript.lock().unwrap())
            .split("\r\n")
            .filter_map(|line| {
                line.strip_prefix(&prefix)?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let limit = std::time::Duration::from_secs(60);
    listener.set_nonblocking(true).unwrap();
    let mut connection = None;
    common::wait::until(limit, "sluice to connect to the socket", || {
        connection = listener.accept().ok().map(|(stream, _)| stream);
        connection.is_some()
    });
    let mut connection = connection.unwrap();
    std::io::Write::write_all(&mut connection, b"hello world\nhello sluice\n").unwrap();
    common::wait::until(limit, "the first counts", || counted("hello") == 2);
    std::io::Write::write_all(&mut connection, "slow river\n".repeat(20).as_bytes()).unwrap();
    common::wait::until(limit, "the slow batch on the status line", || {
        shows("s in `counts` step 1, faulty#linger")
    });
    common::wait::until(limit, "the slow batch's counts", || counted("river") == 20);
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = common::wait::exit_within(&mut child, limit).expect("the run stops");
    reader.join().unwrap();
    let transcript = String::from_utf8_lossy(&transcript.lock().unwrap()).into_owned();
    assert!(status.success(), "{status}: {transcript}");

    let lines = screen(&transcript);
    let rule = "-".repeat(43);
    let mut printed = 0;
    for line in &lines {
        // A print sink's line, whole and alone on its line, or no part of one.
        if line.contains("---") || line.contains("Time:") || line.contains("[\"") {
            let alone = *line == rule
                || line.strip_prefix("Time: ").is_some_and(|rest| {
                    rest.strip_suffix(" ms")
                        .is_some_and(|ms| ms.parse::<i64>().is_ok())
                })
                || line.starts_with("[\"") && line.ends_with(']');
            assert!(alone, "a garbled line {line:?} in:\n{}", lines.join("\n"));
            printed += 1;
        }
    }
    assert!(printed >= 9, "{}", lines.join("\n"));
    // The status line is always erased or replaced, but the last, kept at the end.
    let status_lines: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("batch") && line.contains(" | time "))
        .collect();
    assert_eq!(status_lines.len(), 1, "{}", lines.join("\n"));
    assert!(
        status_lines[0].starts_with("socket-wordcount (default) batch "),
        "{}",
        status_lines[0]
    );
    assert!(
        !lines.iter().any(|line| line.contains("running")),
        "an in-flight status line was left behind: {}",
        lines.join("\n")
    );
    // It was drawn again after the last batch printed.
    let last_print = transcript.rfind("Time: ").unwrap();
    assert!(
        transcript[last_print..].contains("\x1b[2Ksocket-wordcount (default) batch "),
        "no status line after the last batch printed: {transcript:?}"
    );
}

/// Every `batch done` line names its job and gives its times in microseconds too, so that
/// a sub-millisecond batch does not read 0; the millisecond fields stay for scripts.
#[test]
fn batch_log_lines_name_the_job_and_give_microseconds() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("job.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"quick\"\nbatch_interval = \"50ms\"\n[udfs]\nwc = \"{}\"\n\
             [[sources]]\nname = \"s\"\nkind = \"queue\"\nbatches = [[\"a b\"], [\"b c\"], [\"c\"]]\n\
             [[streams]]\nname = \"w\"\nfrom = \"s\"\nsteps = [{{ op = \"flat_map\", udf = \"wc#tokenize\" }}, {{ op = \"count_by_value\" }}]\n\
             [[sinks]]\nfrom = \"w\"\nkind = \"collect\"\n",
            common::udf("wordcount").display()
        ),
    )
    .unwrap();
    let (status, log) = common::run::Run::start(&manifest, &[]).finish();
    assert!(status.success(), "{log:#?}");
    let batches: Vec<&serde_json::Value> = log
        .iter()
        .filter(|line| common::run::message_of(line) == "batch done")
        .map(|line| &line["fields"])
        .collect();
    assert_eq!(batches.len(), 3, "{log:#?}");
    for batch in batches {
        let field = |name: &str| {
            batch[name]
                .as_u64()
                .unwrap_or_else(|| panic!("no `{name}` in {batch}"))
        };
        assert_eq!(batch["job"], "quick", "{batch}");
        assert_eq!(
            field("processing_us") / 1000,
            field("processing_ms"),
            "{batch}"
        );
        assert_eq!(
            field("scheduling_delay_us") / 1000,
            field("scheduling_delay_ms"),
            "{batch}"
        );
        let total = field("scheduling_delay_us") + field("processing_us");
        assert!(field("total_delay_us").abs_diff(total) <= 1, "{batch}");
        assert!(field("processing_us") > 0, "{batch}");
    }
}
