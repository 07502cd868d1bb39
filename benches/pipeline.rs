//! 1,000,000 rows from PostgreSQL to a CSV file on an SFTP host: infra's `pipeline.run` (COPY … TO
//! STDOUT streamed over SFTP to a temporary sibling renamed at the end, with its SHA-256, one engine
//! run) against the shell pipeline `psql -c "\copy (…) to stdout csv header" | ssh host 'cat > f'`
//! (no atomicity: a failure leaves half a file), in the same run against the same throwaway cluster
//! and sshd. Then 1,000,000 JSON Lines records from the HTTP test server into a table: infra's
//! `pipeline.run` http → psql (keys mapped to typed columns, one COPY in one transaction) against
//! `curl … | psql -c "\copy raw(doc) from stdin"` (each line into one `jsonb` column, no mapping).
//! Run with `cargo bench --bench pipeline`.
//!
//! The infra side runs in a child process (this binary with `--one`), so its peak RSS is its own.

#![allow(clippy::print_stdout)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use engine::ctx::{Config, Vars};
use engine::run::{Engine, RunOptions};
use serde_json::{Value, json};

const ROWS: u64 = 1_000_000;
const QUERY: &str = "select g as id, md5(g::text) as digest, now() - (g || ' seconds')::interval as at, g % 7 = 0 as flag from generate_series(1, 1000000) g";

/// In the child: one pipeline through the engine; prints seconds, bytes, rows and peak RSS.
fn one(port: &str, password: &str, ssh_target: &str, remote: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let ssh: Value = serde_json::from_str(ssh_target).expect("target");
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"db": {"postgres": {"host": "127.0.0.1", "port": port.parse::<u16>().expect("port"),
                "user": "postgres", "database": "postgres", "password_env": "PGPASSWORD", "sslmode": "disable"}},
               "web": ssh})
        .to_string(),
    )
    .expect("targets");
    let engine = Engine::new(
        Config::at(dir.path()).with_vars(Vars::from_pairs([
            ("PGPASSWORD", password.to_owned()),
            ("HOME", dir.path().display().to_string()),
        ])),
        Arc::new(engine::Catalog::builtin()),
    );
    let args = json!({"action": "run", "format": "csv",
                      "from": {"type": "psql", "target": "db", "query": QUERY},
                      "to": {"type": "sftp", "target": "web", "path": remote}});
    let plan = engine::compile_call("pipeline", &args, &engine::CompileOptions::default())
        .expect("compiles");
    let t = Instant::now();
    let o = engine.execute(&plan, serde_json::Map::new(), &RunOptions::default());
    let secs = t.elapsed().as_secs_f64();
    assert!(o.ok(), "{:?}", o.steps);
    let r = o.steps[0].result.clone().expect("result");
    assert_eq!(r["records_read"], ROWS);
    println!(
        "{secs} {} {} {}",
        r["bytes"],
        r["records_read"],
        common::peak_rss_kib()
    );
}

/// In the child: one HTTP JSON Lines → table pipeline; prints seconds, bytes, rows and peak RSS.
fn one_http(pg_port: &str, password: &str, url: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"db": {"postgres": {"host": "127.0.0.1", "port": pg_port.parse::<u16>().expect("port"),
                "user": "postgres", "database": "postgres", "password_env": "PGPASSWORD", "sslmode": "disable"}}})
        .to_string(),
    )
    .expect("targets");
    std::fs::write(
        dir.path().join("policy.yaml"),
        "effects: {destructive: allow}\n",
    )
    .expect("policy");
    let engine = Engine::new(
        Config::at(dir.path()).with_vars(Vars::from_pairs([
            ("PGPASSWORD", password.to_owned()),
            ("HOME", dir.path().display().to_string()),
        ])),
        Arc::new(engine::Catalog::builtin()),
    );
    let args = json!({"action": "run", "format": "jsonl", "from": {"type": "http", "url": url},
                      "to": {"type": "psql", "target": "db", "table": "items", "truncate_first": true}});
    let plan = engine::compile_call("pipeline", &args, &engine::CompileOptions::default())
        .expect("compiles");
    let t = Instant::now();
    let o = engine.execute(&plan, serde_json::Map::new(), &RunOptions::default());
    let secs = t.elapsed().as_secs_f64();
    assert!(o.ok(), "{:?}", o.steps);
    let r = o.steps[0].result.clone().expect("result");
    assert_eq!(r["records_written"], ROWS);
    println!(
        "{secs} {} {} {}",
        r["bytes"],
        r["records_read"],
        common::peak_rss_kib()
    );
}

/// HTTP JSON Lines → PostgreSQL, infra against curl | psql \copy, alternated, best of 3 each.
fn http_to_postgres(pg: &support::postgres::Postgres) {
    let http = support::http::HttpServer::start();
    let url = http.url(&format!("/jsonl/{ROWS}"));
    pg.psql("create table items (id bigint primary key, name text not null, note text); create table raw (doc jsonb)");
    let shell = || {
        pg.psql("truncate raw");
        let t = Instant::now();
        let mut curl = Command::new("curl")
            .args(["-sS", "--fail", &url])
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        let st = Command::new(pg.psql_bin())
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port.to_string()])
            .args(["-U", &pg.user, "-d", &pg.database, "-c"])
            .arg("\\copy raw(doc) from stdin with (format csv, quote e'\\x01', delimiter e'\\x02')")
            .env("PGPASSWORD", &pg.password)
            .stdin(curl.stdout.take().expect("curl stdout"))
            .status()
            .expect("psql");
        assert!(st.success() && curl.wait().expect("curl").success());
        t.elapsed().as_secs_f64()
    };
    let infra = || common::child(&["--one-http", &pg.port.to_string(), &pg.password, &url]);
    let (best_shell, best_infra) = common::best_of(3, shell, infra);
    assert_eq!(pg.psql("select count(*) from raw"), ROWS.to_string());
    let mib = 1024.0 * 1024.0;
    let bytes = best_infra.1;
    println!(
        "\n{ROWS} JSON Lines records HTTP → PostgreSQL ({:.1} MiB), best of 3 each, same server and cluster:\n",
        bytes / mib
    );
    println!("| pipeline | time | throughput | peak RSS |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| infra pipeline.run http → psql (keys → typed columns, one COPY, one transaction) | {:.2} s | {:.1} MiB/s | {:.1} MiB |",
        best_infra.0,
        bytes / mib / best_infra.0,
        best_infra.2 / 1024.0
    );
    println!(
        "| curl \\| psql \\copy raw(doc) from stdin (one jsonb column) | {best_shell:.2} s | {:.1} MiB/s | — |",
        bytes / mib / best_shell
    );
    println!(
        "\ninfra throughput / shell pipeline throughput: {:.2}",
        best_shell / best_infra.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        one(&args[i + 1], &args[i + 2], &args[i + 3], &args[i + 4]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--one-http") {
        one_http(&args[i + 1], &args[i + 2], &args[i + 3]);
        return;
    }
    let pg = support::postgres::Postgres::start();
    let sshd = support::sshd::Sshd::start();
    let shell_out = sshd.dir.path().join("shell.csv");
    let infra_out = sshd.dir.path().join("infra.csv");
    let shell = || {
        let t = Instant::now();
        let mut psql = Command::new(pg.psql_bin())
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port.to_string()])
            .args(["-U", &pg.user, "-d", &pg.database, "-c"])
            .arg(format!("\\copy ({QUERY}) to stdout csv header"))
            .env("PGPASSWORD", &pg.password)
            .stdout(Stdio::piped())
            .spawn()
            .expect("psql");
        let st = Command::new("ssh")
            .args(sshd.openssh_args())
            .arg(format!("cat > '{}'", shell_out.display()))
            .stdin(psql.stdout.take().expect("psql stdout"))
            .status()
            .expect("ssh");
        assert!(st.success() && psql.wait().expect("psql").success());
        t.elapsed().as_secs_f64()
    };
    let target = json!({"host": "127.0.0.1", "port": sshd.port, "username": sshd.user,
                        "key_file": sshd.key, "known_hosts": sshd.known_hosts})
    .to_string();
    let (port, out) = (pg.port.to_string(), infra_out.display().to_string());
    let infra = || common::child(&["--one", &port, &pg.password, &target, &out]);
    // warm the server's caches once, then alternate, best of 3 each
    let (best_shell, best_infra) = common::best_of(3, shell, infra);
    let bytes = std::fs::metadata(&shell_out).expect("out").len() as f64;
    let mib = 1024.0 * 1024.0;
    println!(
        "{ROWS} rows PostgreSQL → CSV on the SFTP host ({:.1} MiB), best of 3 each, same cluster and sshd:\n",
        bytes / mib
    );
    println!("| pipeline | time | throughput | peak RSS |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| infra pipeline.run psql → sftp (temp sibling + rename, SHA-256, engine run) | {:.2} s | {:.1} MiB/s | {:.1} MiB |",
        best_infra.0,
        best_infra.1 / mib / best_infra.0,
        best_infra.2 / 1024.0
    );
    println!(
        "| psql \\copy … to stdout csv \\| ssh host 'cat > f' | {:.2} s | {:.1} MiB/s | — |",
        best_shell,
        bytes / mib / best_shell
    );
    println!(
        "\ninfra throughput / shell pipeline throughput: {:.2}",
        (best_infra.1 / best_infra.0) / (bytes / best_shell)
    );
    http_to_postgres(&pg);
}
