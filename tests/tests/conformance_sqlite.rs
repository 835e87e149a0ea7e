//! The conformance suite on the SQLite store (a real file per test).
taskq_tests::conformance_tests!(taskq_tests::sqlite_store());
