//! UDFs that misbehave, for testing that the host contains them.

use sluice_sdk::udfs;

/// Panics on the record 3; passes every other number through.
pub fn panic_on_three(x: i64) -> i64 {
    assert_ne!(x, 3, "three is not allowed");
    x
}

/// Never returns.
pub fn spin(x: i64) -> i64 {
    let mut n = x;
    loop {
        n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
    }
}

/// Allocates without bound.
pub fn hog(x: i64) -> i64 {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![x as u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

/// Prints each record to stdout and stderr, then passes it through.
pub fn chatty(x: i64) -> i64 {
    println!("chatty saw {x}");
    eprintln!("chatty warns about {x}");
    x
}

/// Takes 50 ms of CPU per record, then passes it through: makes batches slow enough to
/// stop one in the middle.
pub fn linger(line: &str) -> String {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(50) {
        std::hint::spin_loop();
    }
    line.to_owned()
}

/// Spins 200 µs, then passes the line through: a step of known cost per record (at most
/// 5000 records/s on one core, whatever else the machine runs), for backpressure tests.
pub fn toil(line: &str) -> String {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_micros(200) {
        std::hint::spin_loop();
    }
    line.to_owned()
}

/// Appends the clock's time in nanoseconds to the line: a UDF that is not deterministic,
/// whose re-run output differs from the first run's.
pub fn stamp(line: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch");
    format!("{line}@{}", now.as_nanos())
}

/// Sleeps a minute in a WASI clock wait, then passes the record through.
pub fn nap(x: i64) -> i64 {
    std::thread::sleep(std::time::Duration::from_secs(60));
    x
}

/// A fixed amount of CPU work per record (about 20 ms), then the record: CPU-bound guests
/// whose share of the cores can be measured.
pub fn burn(x: i64) -> i64 {
    let mut n = x as u64;
    for _ in 0..40_000_000u64 {
        n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    std::hint::black_box(n);
    x
}

/// Recurses without end: overflows the WebAssembly stack (its frames hold only wasm
/// locals, so it is the engine's stack that runs out, not the guest's shadow stack).
pub fn recurse(x: i64) -> i64 {
    #[allow(unconditional_recursion, reason = "the overflow is the point")]
    fn down(x: i64) -> i64 {
        std::hint::black_box(down(x.wrapping_add(1))).wrapping_add(1)
    }
    down(x)
}

/// Prints 100 MiB to stdout, then passes the record through.
pub fn flood(x: i64) -> i64 {
    use std::io::Write;
    let line = [b'x'; 1 << 16];
    let mut out = std::io::stdout().lock();
    for _ in 0..1600 {
        let _ = out.write_all(&line);
    }
    x
}

/// Turns each record into 10 M records.
pub fn explode(x: i64) -> impl Iterator<Item = i64> {
    std::iter::repeat_n(x, 10_000_000)
}

/// Writes the line to stderr, then panics with it: tenant text in a failure, for the UI's
/// escaping test.
pub fn blurt(line: &str) -> String {
    eprintln!("{line}");
    panic!("{line}");
}

udfs! {
    map panic_on_three,
    map blurt,
    map spin,
    map hog,
    map chatty,
    map linger,
    map toil,
    map stamp,
    map nap,
    map burn,
    map recurse,
    map flood,
    flat_map explode,
}
