//! The `sql` kind against a real PostgreSQL (`scripts/postgres.sh start`, then
//! `WEIR_POSTGRES_URL=$(scripts/postgres.sh url)`): execute and query modes with the rows
//! written counted, idempotent writes under redelivery, and the transient/permanent
//! classification (unique violation and syntax errors permanent; a backend killed with
//! `pg_terminate_backend` and an unreachable server transient). Skips, saying so, when
//! `WEIR_POSTGRES_URL` is unset.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use weir::envelope::header;

fn pg_url() -> String {
    // A real PostgreSQL is part of the test setup (scripts/test.sh starts it): no silent skip.
    std::env::var("WEIR_POSTGRES_URL")
        .expect("WEIR_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A table name unique to this run (other test runs share the server).
fn table(base: &str) -> String {
    format!("{base}_{}", std::process::id())
}

async fn count(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0)
}

async fn end(node: &weir::runtime::NodeHandle, topic: &str) -> i64 {
    let parts = node.transport.partition_count(topic).await.expect("topic");
    let mut total = 0;
    for p in 0..parts {
        total += node.transport.end_offset(&weir::envelope::TopicPartition::new(topic, p)).await.expect("end");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_and_query_modes_with_idempotent_writes() {
    let url = pg_url();
    let db = connect(&url).await;
    let t = table("sql_exec");
    db.batch_execute(&format!("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (event_id bigint PRIMARY KEY, lead text NOT NULL, seq int NOT NULL)"))
        .await
        .expect("create table");
    let yaml = format!(
        r#"
topics:
  sqlx-in: {{partitions: 4}}
  sqlx-mid: {{partitions: 4}}
  sqlx-out: {{partitions: 4}}
  sqlx-dlq: {{partitions: 1}}
stages:
  sqlx-write:
    kind: sql
    from: sqlx-in
    to: sqlx-mid
    dlq: sqlx-dlq
    concurrency: 8
    config:
      url_env: WEIR_POSTGRES_URL
      statement: "INSERT INTO {t} (event_id, lead, seq) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING"
      params: [id, key, seq]
  sqlx-read:
    kind: sql
    from: sqlx-mid
    to: sqlx-out
    dlq: sqlx-dlq
    concurrency: 8
    config:
      url_env: WEIR_POSTGRES_URL
      mode: query
      statement: "SELECT event_id, lead, seq FROM {t} WHERE event_id = $1"
      params: [id]
      into: rows
"#
    );
    let node = start(&yaml, Options::default()).await;
    let n = 200u64;
    let redelivered = 50u64;
    // Every id once, then the first 50 again (as a redelivery would): still n rows.
    let records = (0..n).chain(0..redelivered).map(|id| record("sqlx-in", id, &format!("lead-{}", id % 17), id, serde_json::json!({}))).collect();
    produce(&node.transport, records).await;
    let out = collect(&node.transport, "sqlx-out", (n + redelivered) as usize).await;
    wait_fully_committed(&node, "sqlx-read", "sqlx-mid").await;
    let rows = count(&db, &t).await;
    let matched = out
        .iter()
        .filter(|r| {
            let v = json(r);
            v["rows"].as_array().map(Vec::len) == Some(1) && v["rows"][0]["event_id"] == v["id"] && v["rows"][0]["lead"] == v["key"]
        })
        .count();
    let ids: BTreeSet<u64> = out.iter().map(id_of).collect();
    let lost = (0..n).filter(|id| !ids.contains(id)).count();
    let dead = end(&node, "sqlx-dlq").await;
    println!("sql execute+query: sent {}, rows written {rows} (expected {n}), outputs {} with their row {matched}, lost {lost}, dead-lettered {dead}", n + redelivered, out.len());
    assert_eq!(rows, n as i64, "idempotent upsert: redelivered records write nothing");
    assert_eq!(matched, (n + redelivered) as usize);
    assert_eq!((lost, dead), (0, 0));
    node.shutdown().await;
    db.batch_execute(&format!("DROP TABLE {t}")).await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_and_syntax_errors_are_permanent() {
    let url = pg_url();
    let db = connect(&url).await;
    let t = table("sql_class");
    db.batch_execute(&format!("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (event_id bigint PRIMARY KEY, email text UNIQUE NOT NULL)"))
        .await
        .expect("create table");
    let yaml = format!(
        r#"
topics:
  sqlc-in: {{partitions: 2}}
  sqlc-out: {{partitions: 2}}
  sqlc-dlq: {{partitions: 1}}
  sqlc-dlq-syntax: {{partitions: 1}}
stages:
  sqlc-insert:
    kind: sql
    from: sqlc-in
    to: sqlc-out
    dlq: sqlc-dlq
    retry: {{attempts: 3, initial: 10ms, max: 50ms}}
    config:
      url_env: WEIR_POSTGRES_URL
      statement: "INSERT INTO {t} (event_id, email) VALUES ($1, $2)"
      params: [id, email]
  sqlc-syntax:
    kind: sql
    from: sqlc-in
    to: sqlc-out
    dlq: sqlc-dlq-syntax
    retry: {{attempts: 3, initial: 10ms, max: 50ms}}
    config:
      url_env: WEIR_POSTGRES_URL
      statement: "INSERT INTO {t} (event_id, email VALUES ($1, $2)"
      params: [id, email]
"#
    );
    let node = start(&yaml, Options::default()).await;
    let n = 20u64;
    // Ids 10..20 reuse the e-mail of id - 10: a unique violation, one key so order holds.
    let records = (0..n).map(|id| record("sqlc-in", id, "one", id, serde_json::json!({"email": format!("u{}@example.com", id % 10)}))).collect();
    produce(&node.transport, records).await;
    let dup = collect(&node.transport, "sqlc-dlq", 10).await;
    let syntax = collect(&node.transport, "sqlc-dlq-syntax", n as usize).await;
    wait_fully_committed(&node, "sqlc-insert", "sqlc-in").await;
    wait_fully_committed(&node, "sqlc-syntax", "sqlc-in").await;
    let rows = count(&db, &t).await;
    let unique = dup
        .iter()
        .filter(|r| r.header(header::DLQ_ERROR_CLASS) == Some("permanent") && r.header(header::DLQ_REASON).is_some_and(|m| m.contains("23505")))
        .count();
    let dup_ids: BTreeSet<u64> = dup.iter().map(id_of).collect();
    let syntax_permanent = syntax
        .iter()
        .filter(|r| r.header(header::DLQ_ERROR_CLASS) == Some("permanent") && r.header(header::DLQ_REASON).is_some_and(|m| m.contains("42601")))
        .count();
    let insert_retried = node.stats.stage("sqlc-insert").retried.load(Ordering::Relaxed);
    let syntax_retried = node.stats.stage("sqlc-syntax").retried.load(Ordering::Relaxed);
    println!("sql classification: rows written {rows}, unique violations dead-lettered {} ({unique} permanent 23505), syntax errors dead-lettered {} ({syntax_permanent} permanent 42601), retries {insert_retried}+{syntax_retried}, reason: {:?}", dup.len(), syntax.len(), dup[0].header(header::DLQ_REASON));
    assert_eq!(rows, 10);
    assert_eq!(dup_ids, (10..n).collect());
    assert_eq!(unique, 10);
    assert_eq!(syntax_permanent, n as usize);
    assert_eq!((insert_retried, syntax_retried), (0, 0), "permanent errors are not retried");
    node.shutdown().await;
    db.batch_execute(&format!("DROP TABLE {t}")).await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_is_transient_and_retried() {
    let url = pg_url();
    let db = connect(&url).await;
    let t = table("sql_kill");
    db.batch_execute(&format!("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (event_id bigint PRIMARY KEY)")).await.expect("create");
    // The statement takes 2 s, long enough to find its backend and terminate it.
    let statement = format!("INSERT INTO {t} (event_id) SELECT $1::bigint FROM pg_sleep(2) ON CONFLICT (event_id) DO NOTHING");
    let yaml = format!(
        r#"
topics:
  sqlk-in: {{partitions: 1}}
  sqlk-out: {{partitions: 1}}
  sqlk-dlq: {{partitions: 1}}
stages:
  sqlk:
    kind: sql
    from: sqlk-in
    to: sqlk-out
    dlq: sqlk-dlq
    retry: {{attempts: 3, initial: 10ms, max: 50ms}}
    config:
      url_env: WEIR_POSTGRES_URL
      statement: "{statement}"
      params: [id]
"#
    );
    let node = start(&yaml, Options::default()).await;
    produce(&node.transport, vec![record("sqlk-in", 7, "k", 0, serde_json::json!({}))]).await;
    let find = format!("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%INSERT INTO {t}%' AND pid <> pg_backend_pid()");
    let killed = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(row) = db.query_opt(&find, &[]).await.expect("pg_stat_activity") {
                let pid: i32 = row.get(0);
                let ok: bool = db.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.expect("terminate").get(0);
                if ok {
                    return pid;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stage's statement showed up in pg_stat_activity");
    let out = collect(&node.transport, "sqlk-out", 1).await;
    wait_fully_committed(&node, "sqlk", "sqlk-in").await;
    let stats = node.stats.stage("sqlk");
    let transient = stats.failures.transient.load(Ordering::Relaxed);
    let retried = stats.retried.load(Ordering::Relaxed);
    let rows = count(&db, &t).await;
    let dead = end(&node, "sqlk-dlq").await;
    println!("sql terminated backend: killed pid {killed}, transient failures {transient}, retried {retried}, rows written {rows}, delivered {}, dead-lettered {dead}", out.len());
    assert_eq!((transient, retried), (1, 1));
    assert_eq!((rows, out.len(), dead), (1, 1, 0));
    node.shutdown().await;
    db.batch_execute(&format!("DROP TABLE {t}")).await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_transient() {
    // A port nothing listens on: as if the server were stopped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let yaml = format!(
        r#"
topics:
  sqld-in: {{partitions: 1}}
  sqld-out: {{partitions: 1}}
  sqld-dlq: {{partitions: 1}}
stages:
  sqld:
    kind: sql
    from: sqld-in
    to: sqld-out
    dlq: sqld-dlq
    retry: {{attempts: 3, initial: 10ms, max: 50ms}}
    config:
      url: "postgres://postgres@127.0.0.1:{closed}/weir"
      statement: "SELECT 1"
"#
    );
    let node = start(&yaml, Options::default()).await;
    produce(&node.transport, vec![record("sqld-in", 1, "k", 0, serde_json::json!({}))]).await;
    let dlq = collect(&node.transport, "sqld-dlq", 1).await;
    let class = dlq[0].header(header::DLQ_ERROR_CLASS).unwrap_or("");
    let reason = dlq[0].header(header::DLQ_REASON).unwrap_or("").to_string();
    let retried = node.stats.stage("sqld").retried.load(Ordering::Relaxed);
    println!("sql unreachable: class {class}, retried {retried}, reason {reason:?}");
    assert_eq!(class, "transient");
    assert_eq!(retried, 2, "retried up to the attempt limit");
    assert!(reason.contains("gave up after 3 attempts"), "{reason}");
    node.shutdown().await;
}
