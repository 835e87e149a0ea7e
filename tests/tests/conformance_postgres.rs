//! The conformance suite on the PostgreSQL store (one schema per test).
taskq_tests::conformance_tests!(taskq_tests::postgres_store());
