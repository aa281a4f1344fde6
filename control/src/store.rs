//! The SQLite database: forward-only migrations keyed on `PRAGMA
//! user_version`, and write-through persistence of the tailnet state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, bail};
use causeway_tailnet::{AuthKey, ChangeSet, NodeRecord, TailnetInfo, TailnetState};
use causeway_wire::{NodeId, PublicKey, UnixTime};
use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Database file name inside the state directory.
pub(crate) const DB_FILE: &str = "control.db";

/// Migrations, in order; migration `i` brings the schema to version `i + 1`.
/// Never edit one that has shipped: add a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tailnet (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    domain TEXT NOT NULL,
    ula TEXT NOT NULL,
    control_public_key TEXT NOT NULL,
    next_node_id INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE auth_keys (
    id TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    reusable INTEGER NOT NULL,
    ephemeral INTEGER NOT NULL,
    tags TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER,
    revoked INTEGER NOT NULL,
    used INTEGER NOT NULL
);
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    machine_key TEXT UNIQUE,
    node_key TEXT NOT NULL UNIQUE,
    key_expiry INTEGER,
    ipv4 TEXT NOT NULL UNIQUE,
    ipv6 TEXT NOT NULL UNIQUE,
    hostname TEXT NOT NULL,
    name TEXT NOT NULL,
    tags TEXT NOT NULL,
    ephemeral INTEGER NOT NULL,
    wireguard_only INTEGER NOT NULL,
    advertised_routes TEXT NOT NULL,
    approved_routes TEXT NOT NULL,
    endpoints TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_seen INTEGER
);
CREATE TABLE policy (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    text TEXT NOT NULL,
    updated INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE split_dns (
    domain TEXT PRIMARY KEY,
    resolvers TEXT NOT NULL
);
"#,
    // The user owning a key's nodes, and a node's user (`name@domain`);
    // `user_name` because `user` is reserved in SQL. Rows from before have
    // none, which is what they meant.
    r#"
ALTER TABLE auth_keys ADD COLUMN user_name TEXT;
ALTER TABLE nodes ADD COLUMN user_name TEXT;
"#,
];

/// An open database.
pub(crate) struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    pub(crate) fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)
            .with_context(|| format!("opening database {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .context("enabling WAL")?;
        conn.pragma_update(None, "foreign_keys", true)
            .context("enabling foreign keys")?;
        migrate(&mut conn).with_context(|| format!("migrating database {}", path.display()))?;
        Ok(Self { conn })
    }

    /// The tailnet row, if the tailnet was created.
    pub(crate) fn tailnet(&self) -> anyhow::Result<Option<(TailnetInfo, PublicKey, u64)>> {
        let row = self
            .conn
            .query_row("SELECT name, domain, ula, control_public_key, next_node_id FROM tailnet WHERE id = 1", [], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .optional()
            .context("reading the tailnet")?;
        let Some((name, domain, ula, key, next)) = row else {
            return Ok(None);
        };
        let ula = ula
            .parse()
            .with_context(|| format!("stored ULA {ula:?} is not an IPv6 prefix"))?;
        let key = key.parse().context("stored control public key")?;
        Ok(Some((
            TailnetInfo { name, domain, ula },
            key,
            u64::try_from(next).unwrap_or(1),
        )))
    }

    /// Creates the tailnet row.
    pub(crate) fn create_tailnet(
        &self,
        info: &TailnetInfo,
        key: &PublicKey,
        now: UnixTime,
    ) -> anyhow::Result<()> {
        self.conn
            .execute(
                "INSERT INTO tailnet (id, name, domain, ula, control_public_key, next_node_id, created)
                 VALUES (1, ?1, ?2, ?3, ?4, 1, ?5)",
                params![info.name, info.domain, info.ula.to_string(), key.to_string(), now],
            )
            .context("creating the tailnet")?;
        Ok(())
    }

    /// Loads the whole tailnet state.
    pub(crate) fn load(&self, now: UnixTime) -> anyhow::Result<TailnetState> {
        let Some((info, _, next_node_id)) = self.tailnet()? else {
            bail!("the database holds no tailnet; run `appliance control init` first");
        };
        let mut stmt = self.conn.prepare(
            "SELECT id, machine_key, node_key, key_expiry, ipv4, ipv6, hostname, name, tags, ephemeral,
                    wireguard_only, advertised_routes, approved_routes, endpoints, created, last_seen, user_name
             FROM nodes ORDER BY id",
        )?;
        let nodes = stmt
            .query_map([], node_from_row)?
            .collect::<Result<Vec<_>, _>>()
            .context("reading nodes")?;
        let mut stmt = self.conn.prepare(
            "SELECT id, secret_hash, reusable, ephemeral, tags, created, expires, revoked, used, user_name
             FROM auth_keys ORDER BY id",
        )?;
        let keys = stmt
            .query_map([], key_from_row)?
            .collect::<Result<Vec<_>, _>>()
            .context("reading auth keys")?;
        let policy: Option<String> = self
            .conn
            .query_row("SELECT text FROM policy WHERE id = 1", [], |r| r.get(0))
            .optional()
            .context("reading the policy")?;
        let mut stmt = self
            .conn
            .prepare("SELECT domain, resolvers FROM split_dns ORDER BY domain")?;
        let split_dns = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    from_json(&r.get::<_, String>(1)?, 1)?,
                ))
            })?
            .collect::<Result<BTreeMap<String, Vec<IpAddr>>, _>>()
            .context("reading split DNS")?;
        TailnetState::restore(info, nodes, keys, policy, split_dns, next_node_id, now)
            .context("stored policy")
    }

    /// Writes what `changes` says changed, and the new policy text if
    /// given, in one transaction.
    pub(crate) fn persist(
        &mut self,
        state: &TailnetState,
        changes: &ChangeSet,
        policy: Option<&str>,
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        for &id in &changes.nodes {
            match state.node(id) {
                Some(node) => upsert_node(&tx, node)?,
                None => {
                    tx.execute("DELETE FROM nodes WHERE id = ?1", params![id_sql(id)])?;
                }
            }
        }
        for id in &changes.auth_keys {
            if let Some(key) = state.auth_key(id) {
                upsert_key(&tx, key)?;
            }
        }
        tx.execute(
            "UPDATE tailnet SET next_node_id = ?1 WHERE id = 1",
            params![i64::try_from(state.next_node_id()).unwrap_or(i64::MAX)],
        )?;
        if changes.split_dns_changed {
            // A handful of rows: rewriting them all keeps this obviously right.
            tx.execute("DELETE FROM split_dns", [])?;
            for (domain, resolvers) in state.split_dns() {
                tx.execute(
                    "INSERT INTO split_dns (domain, resolvers) VALUES (?1, ?2)",
                    params![domain, json(resolvers)],
                )?;
            }
        }
        if let Some(text) = policy {
            tx.execute(
                "INSERT INTO policy (id, text, updated) VALUES (1, ?1, 0)
                 ON CONFLICT (id) DO UPDATE SET text = excluded.text",
                params![text],
            )?;
        }
        tx.commit().context("committing")?;
        Ok(())
    }
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > known {
        bail!(
            "database schema version {version} is newer than this build knows ({known}); refusing to downgrade"
        );
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {}", index + 1))?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn id_sql(id: NodeId) -> i64 {
    i64::try_from(id.0).unwrap_or(i64::MAX)
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Serialising plain lists of strings and addresses cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, column: usize) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_col<T: std::str::FromStr>(text: &str, column: usize) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().map_err(|e: T::Err| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn upsert_node(tx: &rusqlite::Transaction<'_>, node: &NodeRecord) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO nodes (id, machine_key, node_key, key_expiry, ipv4, ipv6, hostname, name, tags, ephemeral,
                            wireguard_only, advertised_routes, approved_routes, endpoints, created, last_seen,
                            user_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
         ON CONFLICT (id) DO UPDATE SET
            machine_key = excluded.machine_key, node_key = excluded.node_key, key_expiry = excluded.key_expiry,
            hostname = excluded.hostname, name = excluded.name, tags = excluded.tags, user_name = excluded.user_name,
            ephemeral = excluded.ephemeral, advertised_routes = excluded.advertised_routes,
            approved_routes = excluded.approved_routes, endpoints = excluded.endpoints,
            last_seen = excluded.last_seen",
        params![
            id_sql(node.id),
            node.machine_key.map(|k| k.to_string()),
            node.node_key.to_string(),
            node.key_expiry,
            node.ipv4.to_string(),
            node.ipv6.to_string(),
            node.hostname,
            node.name,
            json(&node.tags),
            node.ephemeral,
            node.wireguard_only,
            json(&node.advertised_routes),
            json(&node.approved_routes),
            json(&node.endpoints),
            node.created,
            node.last_seen,
            node.user,
        ],
    )
    .with_context(|| format!("storing node {}", node.id))?;
    Ok(())
}

fn node_from_row(r: &Row<'_>) -> rusqlite::Result<NodeRecord> {
    let machine: Option<String> = r.get(1)?;
    Ok(NodeRecord {
        id: NodeId(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
        machine_key: machine.map(|m| parse_col(&m, 1)).transpose()?,
        node_key: parse_col(&r.get::<_, String>(2)?, 2)?,
        key_expiry: r.get(3)?,
        ipv4: parse_col(&r.get::<_, String>(4)?, 4)?,
        ipv6: parse_col(&r.get::<_, String>(5)?, 5)?,
        hostname: r.get(6)?,
        name: r.get(7)?,
        tags: from_json(&r.get::<_, String>(8)?, 8)?,
        ephemeral: r.get(9)?,
        wireguard_only: r.get(10)?,
        advertised_routes: from_json::<BTreeSet<IpNet>>(&r.get::<_, String>(11)?, 11)?,
        approved_routes: from_json::<BTreeSet<IpNet>>(&r.get::<_, String>(12)?, 12)?,
        endpoints: from_json(&r.get::<_, String>(13)?, 13)?,
        created: r.get(14)?,
        last_seen: r.get(15)?,
        user: r.get(16)?,
    })
}

fn upsert_key(tx: &rusqlite::Transaction<'_>, key: &AuthKey) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO auth_keys (id, secret_hash, reusable, ephemeral, tags, created, expires, revoked, used, user_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET revoked = excluded.revoked, used = excluded.used",
        params![
            key.id,
            key.secret_hash.as_slice(),
            key.reusable,
            key.ephemeral,
            json(&key.tags),
            key.created,
            key.expires,
            key.revoked,
            key.used,
            key.user,
        ],
    )
    .with_context(|| format!("storing auth key {}", key.id))?;
    Ok(())
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<AuthKey> {
    let hash: Vec<u8> = r.get(1)?;
    let secret_hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Blob,
            "secret hash is not 32 bytes".into(),
        )
    })?;
    Ok(AuthKey {
        id: r.get(0)?,
        secret_hash,
        reusable: r.get(2)?,
        ephemeral: r.get(3)?,
        tags: from_json(&r.get::<_, String>(4)?, 4)?,
        created: r.get(5)?,
        expires: r.get(6)?,
        revoked: r.get(7)?,
        used: r.get(8)?,
        user: r.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_tailnet::AuthKeySpec;
    use causeway_wire::PrivateKey;

    const NOW: UnixTime = 1_800_000_000;

    /// Writes a database as the schema before users (version 2) did: its
    /// migrations, and rows with the column lists that code inserted.
    fn write_pre_user_database(dir: &Path) -> (PublicKey, PublicKey) {
        let machine = PrivateKey::from_random_bytes([1; 32]).public_key();
        let node_key = PrivateKey::from_random_bytes([2; 32]).public_key();
        let control_key = PrivateKey::from_random_bytes([3; 32]).public_key();
        let conn = Connection::open(dir.join(DB_FILE)).expect("creates");
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).expect("old migration");
        }
        conn.pragma_update(None, "user_version", 2).expect("sets");
        conn.execute(
            "INSERT INTO tailnet (id, name, domain, ula, control_public_key, next_node_id, created)
             VALUES (1, 'old', 'old.causeway.internal', 'fd12:3456:789a::/48', ?1, 2, ?2)",
            params![control_key.to_string(), NOW],
        )
        .expect("tailnet row");
        conn.execute(
            "INSERT INTO auth_keys (id, secret_hash, reusable, ephemeral, tags, created, expires, revoked, used)
             VALUES ('0a0b0c0d0e0f', ?1, 1, 0, '[\"tag:router\"]', ?2, NULL, 0, 1)",
            params![[7u8; 32].as_slice(), NOW],
        )
        .expect("key row");
        conn.execute(
            "INSERT INTO nodes (id, machine_key, node_key, key_expiry, ipv4, ipv6, hostname, name, tags, ephemeral,
                                wireguard_only, advertised_routes, approved_routes, endpoints, created, last_seen)
             VALUES (1, ?1, ?2, ?3, '100.64.0.1', 'fd12:3456:789a::6440:1', 'router', 'router',
                     '[\"tag:router\"]', 0, 0, '[\"198.19.1.0/24\"]', '[\"198.19.1.0/24\"]',
                     '[\"198.18.0.4:41641\"]', ?4, ?4)",
            params![machine.to_string(), node_key.to_string(), NOW + 3600, NOW],
        )
        .expect("node row");
        (machine, node_key)
    }

    #[test]
    fn a_database_from_before_users_opens_keeps_its_rows_and_then_stores_users() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (machine, node_key) = write_pre_user_database(dir.path());

        let mut store = Store::open(dir.path()).expect("migrates");
        let mut state = store.load(NOW).expect("loads");
        let router = state.node(NodeId(1)).expect("old node kept");
        assert_eq!(router.machine_key, Some(machine));
        assert_eq!(router.node_key, node_key);
        assert_eq!(router.name, "router");
        assert_eq!(router.tags, vec!["tag:router".to_owned()]);
        assert_eq!(router.user, None);
        assert_eq!(
            router.approved_routes,
            BTreeSet::from(["198.19.1.0/24".parse::<IpNet>().expect("prefix")])
        );
        let old_key = state.auth_key("0a0b0c0d0e0f").expect("old key kept");
        assert_eq!((old_key.user.as_deref(), old_key.used), (None, true));
        assert_eq!(state.next_node_id(), 2);

        // The migrated database takes users for new keys and nodes.
        let spec = AuthKeySpec {
            user: Some("alice@example.com".into()),
            ..AuthKeySpec::default()
        };
        let (new, changes) = state
            .create_auth_key(&spec, [4; 6], [5; 24], NOW)
            .expect("key");
        store.persist(&state, &changes, None).expect("stores key");
        let device = PrivateKey::from_random_bytes([6; 32]).public_key();
        let (device_id, changes) = state
            .add_wireguard_device_for("printer", device, Some("bob@example.com"), NOW)
            .expect("device");
        store
            .persist(&state, &changes, None)
            .expect("stores device");
        drop(store);

        let store = Store::open(dir.path()).expect("reopens");
        let state = store.load(NOW).expect("reloads");
        assert_eq!(
            state.auth_key(&new.key.id).and_then(|k| k.user.as_deref()),
            Some("alice@example.com")
        );
        assert_eq!(
            state.node(device_id).and_then(|n| n.user.as_deref()),
            Some("bob@example.com")
        );
        assert_eq!(state.node(NodeId(1)).map(|n| n.user.clone()), Some(None));
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("reads");
        assert_eq!(version, 3);
    }

    #[test]
    fn migrations_are_idempotent_and_refuse_newer_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("first open"));
        drop(Store::open(dir.path()).expect("second open"));
        let conn = Connection::open(dir.path().join(DB_FILE)).expect("opens");
        conn.pragma_update(None, "user_version", 99).expect("sets");
        drop(conn);
        let err = Store::open(dir.path()).err().expect("refuses");
        assert!(format!("{err:#}").contains("newer"), "{err:#}");
    }
}
