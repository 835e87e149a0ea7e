//! The attribute macros of taskq, `#[task]` and `#[iterative_task]`.
//!
//! Use them through `taskq_runtime`, which re-exports them and holds everything the
//! generated code needs; this crate only parses, checks and generates.

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;

use crate::attr::Kind;

/// PLACEHOLDER_TASK_DOC
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(args.into(), item.into(), Kind::Plain).into()
}

/// PLACEHOLDER_ITER_DOC
#[proc_macro_attribute]
pub fn iterative_task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(args.into(), item.into(), Kind::Iterative).into()
}
