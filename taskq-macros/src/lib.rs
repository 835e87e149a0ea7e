//! placeholder while the macros are written
use proc_macro::TokenStream;
/// placeholder
#[proc_macro_attribute]
pub fn task(_a: TokenStream, item: TokenStream) -> TokenStream {
    item
}
/// placeholder
#[proc_macro_attribute]
pub fn iterative_task(_a: TokenStream, item: TokenStream) -> TokenStream {
    item
}
