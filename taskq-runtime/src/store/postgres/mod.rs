//! The PostgreSQL store (placeholder while it is written).
use super::*;
/// The PostgreSQL store.
#[derive(Debug)]
pub struct PostgresStore;
impl PostgresStore {
    /// Connects to `url`.
    pub async fn open(url: &str) -> Result<super::memory::MemoryStore, StoreError> {
        Err(StoreError::Backend(format!(
            "postgres store not built yet ({url})"
        )))
    }
}
