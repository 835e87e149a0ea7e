//! Shared pieces of the taskq examples.
