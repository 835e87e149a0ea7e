//! The SQLite store (placeholder while it is written).
use super::*;
/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore;
impl SqliteStore {
    /// Opens (creating) the database at `path`.
    pub async fn open(path: &str) -> Result<super::memory::MemoryStore, StoreError> {
        Err(StoreError::Backend(format!(
            "sqlite store not built yet ({path})"
        )))
    }
}
