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

udfs! {
    map panic_on_three,
    map spin,
    map hog,
    map chatty,
    map linger,
}
