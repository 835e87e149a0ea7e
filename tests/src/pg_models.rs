//! A model over a real PostgreSQL table for the iterative-task tests on Postgres: an
//! `items (id, grp)` table and an `effects` table the test tasks write to, kept in the
//! same schema as the test's PostgresStore (the `schema=` option of
//! [`crate::postgres_store_url`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use taskq_runtime::tokio_postgres::{self, Client, NoTls};
use taskq_runtime::{Model, TaskError};

/// The app's database for the Postgres iterative tests: one `tokio_postgres` connection
/// (it pipelines concurrent queries) whose `search_path` is the test's schema.
#[derive(Clone)]
pub struct PgItemDb {
    client: Arc<Client>,
    schema: Option<String>,
}

impl std::fmt::Debug for PgItemDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgItemDb")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// One row of `items`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgItem {
    /// Primary key, the cursor.
    pub id: i64,
    /// A group, to filter on.
    pub grp: String,
}

/// Which items a run walks: one group, or all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PgItemFilter {
    /// Only this group; `None` for every item.
    pub grp: Option<String>,
}

/// Splits a taskq store URL into the driver's URL and its `schema=` option.
pub fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| match p.split_once('=') {
            Some(("schema" | "taskq_schema", v)) => {
                schema = Some(v.to_string());
                false
            }
            Some(("pool_size", _)) => false,
            _ => !p.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_string(), schema)
    } else {
        (format!("{base}?{}", rest.join("&")), schema)
    }
}

impl PgItemDb {
    /// Connects to a taskq store URL; the app's tables go to its `schema=` (created if
    /// missing), where the store keeps its own. Creates `items` and `effects`.
    pub async fn connect(url: &str) -> PgItemDb {
        let (driver_url, schema) = split_schema(url);
        let (client, conn) = tokio_postgres::connect(&driver_url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {driver_url}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        if let Some(s) = &schema {
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\""
                ))
                .await
                .expect("set the search path");
        }
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY, grp text NOT NULL);
                 CREATE INDEX IF NOT EXISTS items_grp_id ON items (grp, id);
                 CREATE TABLE IF NOT EXISTS effects (
                     seq bigserial PRIMARY KEY,
                     id bigint NOT NULL,
                     step bigint NOT NULL,
                     attempt int NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS effects_id ON effects (id);",
            )
            .await
            .expect("create items and effects");
        PgItemDb {
            client: Arc::new(client),
            schema,
        }
    }

    /// The connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Inserts items `1..=n`, item `i` in group `groups[i % groups.len()]`.
    pub async fn fill(&self, n: i64, groups: &[&str]) {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        self.client
            .execute(
                "INSERT INTO items (id, grp)
                 SELECT g, ($2::text[])[1 + g % array_length($2::text[], 1)]
                 FROM generate_series(1, $1::int8) AS g",
                &[&n, &groups],
            )
            .await
            .expect("fill items");
        self.client
            .batch_execute("ANALYZE items")
            .await
            .expect("analyze");
    }

    /// The ids of a group (or all), ascending.
    pub async fn ids(&self, grp: Option<&str>) -> Vec<i64> {
        self.client
            .query(
                "SELECT id FROM items WHERE ($1::text IS NULL OR grp = $1) ORDER BY id",
                &[&grp],
            )
            .await
            .expect("select ids")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Records that a step processed these items (one `effects` row per item).
    pub async fn record(&self, items: &[PgItem], step: i64, attempt: i32) -> Result<(), TaskError> {
        let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
        self.client
            .execute(
                "INSERT INTO effects (id, step, attempt) SELECT unnest($1::int8[]), $2, $3",
                &[&ids, &step, &attempt],
            )
            .await?;
        Ok(())
    }

    /// How many `effects` rows each processed id has.
    pub async fn effect_counts(&self) -> BTreeMap<i64, usize> {
        self.client
            .query(
                "SELECT id, count(*) FROM effects GROUP BY id ORDER BY id",
                &[],
            )
            .await
            .expect("count effects")
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1) as usize))
            .collect()
    }

    /// Drops the schema (the app's tables and the store's), when the URL named one.
    pub async fn drop_schema(&self) {
        if let Some(s) = &self.schema {
            self.client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
                .await
                .expect("drop the test schema");
        }
    }
}

impl Model for PgItem {
    type Key = i64;
    type Filter = PgItemFilter;
    type Source = PgItemDb;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        db: &PgItemDb,
        f: &PgItemFilter,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<PgItem>, TaskError> {
        let after = after.copied().unwrap_or(i64::MIN);
        let limit = limit as i64;
        // Two statements, so that each keyset page is an index range scan.
        let rows = match &f.grp {
            Some(g) => {
                db.client
                    .query(
                        "SELECT id, grp FROM items WHERE grp = $1 AND id > $2
                         ORDER BY id LIMIT $3",
                        &[g, &after, &limit],
                    )
                    .await?
            }
            None => {
                db.client
                    .query(
                        "SELECT id, grp FROM items WHERE id > $1 ORDER BY id LIMIT $2",
                        &[&after, &limit],
                    )
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|r| PgItem {
                id: r.get(0),
                grp: r.get(1),
            })
            .collect())
    }

    async fn count(db: &PgItemDb, f: &PgItemFilter) -> Result<Option<u64>, TaskError> {
        let n: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM items WHERE ($1::text IS NULL OR grp = $1)",
                &[&f.grp],
            )
            .await?
            .get(0);
        Ok(Some(n as u64))
    }
}
