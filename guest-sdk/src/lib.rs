//! Write Sluice user functions (UDFs) as plain Rust functions over serde types, and export
//! them as a WebAssembly component the Sluice host runs.
//!
//! ```
//! use sluice_sdk::udfs;
//!
//! /// Splits a line into words.
//! fn tokenize(line: &str) -> Vec<String> {
//!     line.split_whitespace().map(str::to_lowercase).collect()
//! }
//!
//! /// Pairs a word with a count of one.
//! fn one(word: String) -> (String, i64) {
//!     (word, 1)
//! }
//!
//! fn sum(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! udfs! {
//!     flat_map tokenize,
//!     map one,
//!     reduce sum,
//! }
//!
//! // Built natively (as here), the same table runs in-process:
//! assert_eq!(functions()[0].name, "tokenize");
//! ```
//!
//! Build the crate (a `cdylib`) with `sluice udf build PATH`, or `cargo build --release
//! --target wasm32-wasip2`; a manifest then refers to a function as
//! `path/to/crate.wasm#tokenize`. `udfs/wordcount` is a complete example.
//!
//! | kind | signature | serves |
//! |---|---|---|
//! | `map` | `fn(A) -> B` | map, key extraction |
//! | `flat_map` | `fn(A) -> impl IntoIterator<Item = B>` | flatMap |
//! | `filter` | `fn(A) -> bool` | filter |
//! | `map_partition` | `fn(Vec<A>) -> impl IntoIterator<Item = B>` | mapPartitions |
//! | `reduce` | `fn(A, A) -> A` | reduce, reduceByKey, windowed reductions and their inverses, mergeCombiners |
//! | `fold` | `fn(C, V) -> C` | combineByKey's mergeValue |
//! | `update_state` | `fn(Vec<V>, Option<S>) -> Option<S>` | updateStateByKey (`None` drops the key) |
//! | `map_with_state` | `fn(K, Option<V>, &mut State<S>) -> Option<M>` | mapWithState (`None` emits nothing) |
//!
//! `A` may borrow from the record (`&str`, `&[u8]`), or be any `Deserialize` type; `B` any
//! `Serialize` type. A function is called once per record, but the host calls into the
//! component once per batch partition. A panic fails the batch with the panic message and
//! the index of the record being processed; anything printed to stdout or stderr goes to
//! the job's log.
//!
//! State functions see only their key's state, which the host keeps between batches and
//! checkpoints; [`batch_time_ms`] gives the time of the batch they run for.
//!
//! A Kafka source with `metadata = true` gives each function a [`KafkaRecord`]: the key
//! and value with the topic, partition, offset, timestamp and headers they came with.

#[cfg(any(test, all(target_family = "wasm", not(target_feature = "atomics"))))]
mod alloc;
#[cfg(target_family = "wasm")]
#[doc(hidden)]
pub mod dispatch;
pub mod kafka;

pub use kafka::KafkaRecord;
pub use serde;
pub use sluice_abi as abi;
pub use sluice_abi::{State, Value, batch_time_ms};

/// Every component's Rust allocations (the strings and vectors its functions return, the
/// batches the host hands it) go through [`alloc::SizeClasses`].
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();

/// The bindings wit-bindgen generates for the `combining-udf` world of `sluice:udf`, the
/// `udf` world plus the `combine` export (used by [`udfs!`]).
/// The state exports flatten to eight core-wasm arguments, past clippy's limit.
#[cfg(target_family = "wasm")]
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "combining-udf",
        pub_export_macro: true,
        export_macro_name: "export_component",
        default_bindings_module: "sluice_sdk::bindings",
    });
}

/// Exports the listed functions as this crate's component, one `kind name` per line (see
/// the crate docs for the kinds). Use it once per crate, at its root. Built for a native
/// target, the crate instead offers the same table as `functions()`, so its functions
/// can run in-process through the host's native path.
#[macro_export]
macro_rules! udfs {
    ($($kind:ident $name:ident),* $(,)?) => {
        static __SLUICE_FUNCTIONS: &[$crate::abi::NamedFunction] =
            $crate::abi::functions!($($kind $name),*);

        #[cfg(target_family = "wasm")]
        struct __SluiceComponent;

        #[cfg(target_family = "wasm")]
        impl $crate::bindings::Guest for __SluiceComponent {
            fn functions() -> ::std::vec::Vec<$crate::dispatch::FunctionInfo> {
                $crate::dispatch::functions(__SLUICE_FUNCTIONS)
            }
            fn map(function: u32, input: $crate::dispatch::Batch) -> $crate::dispatch::BatchResult {
                $crate::dispatch::map(__SLUICE_FUNCTIONS, function, input)
            }
            fn flat_map(function: u32, input: $crate::dispatch::Batch) -> $crate::dispatch::GroupsResult {
                $crate::dispatch::flat_map(__SLUICE_FUNCTIONS, function, input)
            }
            fn filter(function: u32, input: $crate::dispatch::Batch) -> $crate::dispatch::BitmapResult {
                $crate::dispatch::filter(__SLUICE_FUNCTIONS, function, input)
            }
            fn map_partition(function: u32, input: $crate::dispatch::Batch) -> $crate::dispatch::BatchResult {
                $crate::dispatch::map_partition(__SLUICE_FUNCTIONS, function, input)
            }
            fn chain(functions: ::std::vec::Vec<u32>, input: $crate::dispatch::Batch) -> $crate::dispatch::BatchResult {
                $crate::dispatch::chain(__SLUICE_FUNCTIONS, functions, input)
            }
            fn combine(functions: ::std::vec::Vec<u32>, create: ::std::option::Option<u32>, merge: u32, input: $crate::dispatch::Batch, flush: bool) -> $crate::dispatch::BatchResult {
                $crate::dispatch::combine(__SLUICE_FUNCTIONS, functions, create, merge, input, flush)
            }
            fn aggregate(function: u32, input: $crate::dispatch::Groups) -> $crate::dispatch::BatchResult {
                $crate::dispatch::aggregate(__SLUICE_FUNCTIONS, function, input)
            }
            fn update_state(function: u32, batch_time: i64, input: $crate::dispatch::Groups) -> $crate::dispatch::BatchResult {
                $crate::dispatch::update_state(__SLUICE_FUNCTIONS, function, batch_time, input)
            }
            fn map_with_state(function: u32, batch_time: i64, input: $crate::dispatch::Groups) -> $crate::dispatch::GroupsResult {
                $crate::dispatch::map_with_state(__SLUICE_FUNCTIONS, function, batch_time, input)
            }
        }

        #[cfg(target_family = "wasm")]
        $crate::bindings::export_component!(__SluiceComponent with_types_in $crate::bindings);

        /// The exported functions, for running them natively (tests, benchmarks).
        pub fn functions() -> &'static [$crate::abi::NamedFunction] {
            __SLUICE_FUNCTIONS
        }
    };
}
