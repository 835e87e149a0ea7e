//! Shared helpers for the taskq test suite.
