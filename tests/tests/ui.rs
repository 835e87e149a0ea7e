//! Compile-time behaviour of `#[task]` and `#[iterative_task]`: every error a user can see
//! has a `.stderr` file under `tests/ui/fail`, and the `tests/ui/pass` files must compile.
//!
//! The `.stderr` files were made with rustc 1.95.0; other compilers word and place
//! diagnostics differently, so run this test with that toolchain. Regenerate them with
//! `TRYBUILD=overwrite cargo test -p taskq-tests --test ui` and read every diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
