//! The conformance suite on the memory store.
taskq_tests::conformance_tests!(taskq_tests::memory_store());
