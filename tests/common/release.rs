//! A component "rebuilt": the same code under a new digest, as a new release of the same
//! UDFs would be. Shared by the tests and the benchmarks.

/// `wasm` with a custom section naming release `release` appended.
pub fn new_release(wasm: &[u8], release: u8) -> Vec<u8> {
    let name = b"sluice-release";
    let mut rebuilt = wasm.to_vec();
    rebuilt.push(0); // custom section
    rebuilt.push((1 + name.len() + 1) as u8);
    rebuilt.push(name.len() as u8);
    rebuilt.extend_from_slice(name);
    rebuilt.push(release);
    rebuilt
}
