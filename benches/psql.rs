//! Export 1,000,000 rows to CSV: infra's `psql.export` (COPY … TO STDOUT through the engine, into an
//! artifact with its SHA-256) against `psql -c "\copy (…) to stdout csv"` writing a file, in the same run
//! against the same throwaway cluster. Run with `cargo bench --bench psql`.
//!
//! The infra export runs in a child process (this binary with `--one`), so its peak RSS is its own.

#![allow(clippy::print_stdout)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use engine::ctx::{Config, Vars};
use engine::run::{Engine, RunOptions};
use serde_json::json;

const ROWS: u64 = 1_000_000;
const QUERY: &str = "select g as id, md5(g::text) as digest, now() - (g || ' seconds')::interval as at, g % 7 = 0 as flag from generate_series(1, 1000000) g";

/// In the child: one export through the engine; prints seconds, bytes, rows and peak RSS.
fn one(port: &str, password: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"db": {"postgres": {"host": "127.0.0.1", "port": port.parse::<u16>().expect("port"),
                "user": "postgres", "database": "postgres", "password_env": "PGPASSWORD", "sslmode": "disable"}}})
        .to_string(),
    )
    .expect("targets");
    let engine = Engine::new(
        Config::at(dir.path()).with_vars(Vars::from_pairs([("PGPASSWORD", password)])),
        Arc::new(engine::Catalog::builtin()),
    );
    let args = json!({"action": "export", "target": "db", "query": QUERY, "format": "csv", "csv_header": true});
    let plan =
        engine::compile_call("psql", &args, &engine::CompileOptions::default()).expect("compiles");
    let t = Instant::now();
    let o = engine.execute(&plan, serde_json::Map::new(), &RunOptions::default());
    let secs = t.elapsed().as_secs_f64();
    assert!(o.ok(), "{:?}", o.steps);
    let r = o.steps[0].result.clone().expect("result");
    assert_eq!(r["rows"], ROWS);
    println!(
        "{secs} {} {} {}",
        r["bytes"],
        r["rows"],
        common::peak_rss_kib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        one(&args[i + 1], &args[i + 2]);
        return;
    }
    let pg = support::postgres::Postgres::start();
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("psql.csv");
    let psql = || {
        let t = Instant::now();
        let st = Command::new(pg.psql_bin())
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                &pg.user,
                "-d",
                &pg.database,
                "-c",
            ])
            .arg(format!("\\copy ({QUERY}) to stdout csv header"))
            .env("PGPASSWORD", &pg.password)
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(Stdio::inherit())
            .status()
            .expect("psql");
        assert!(st.success());
        t.elapsed().as_secs_f64()
    };
    let infra = || common::child(&["--one", &pg.port.to_string(), &pg.password]);
    // warm the server's caches once, then alternate, best of 3 each
    let (best_psql, best_infra) = common::best_of(3, psql, infra);
    let bytes = std::fs::metadata(&out).expect("out").len() as f64;
    let mib = 1024.0 * 1024.0;
    println!(
        "Export of {ROWS} rows to CSV ({:.1} MiB), best of 3 each, same cluster:\n",
        bytes / mib
    );
    println!("| exporter | time | throughput | peak RSS |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| infra psql.export (artifact + SHA-256, engine run) | {:.2} s | {:.1} MiB/s | {:.1} MiB |",
        best_infra.0,
        best_infra.1 / mib / best_infra.0,
        best_infra.2 / 1024.0
    );
    println!(
        "| psql \\copy … to stdout csv (to a file) | {:.2} s | {:.1} MiB/s | — |",
        best_psql,
        bytes / mib / best_psql
    );
    println!(
        "\ninfra throughput / psql throughput: {:.2}",
        (best_infra.1 / best_infra.0) / (bytes / best_psql)
    );
}
