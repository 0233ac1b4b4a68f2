//! `identity_bench` with mimalloc as the global allocator, as in the `portrait` binary.
//!
//! ```text
//! cargo run --profile bench -p portrait-core --example identity_bench_mimalloc -- apply
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "identity_bench.rs"]
mod bench;

fn main() {
    bench::run("mimalloc");
}
