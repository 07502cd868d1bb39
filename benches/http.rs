//! 1,000 sequential `http.request` GETs through the engine to a loopback server, with `timeout_ms`
//! (kept-alive connections) and without (a connection each, so the idle timeout holds), against `curl`
//! fetching the same 1,000 URLs in one process, kept alive and with `Connection: close`, in the same
//! run. Run with `cargo bench --bench http`.

#![allow(clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::ctx::Config;
use engine::run::{Engine, RunOptions};
use serde_json::json;

const CALLS: usize = 1000;

/// The engine's 1,000 calls with `args`: total and sorted per-call times.
fn infra(engine: &Engine, args: &serde_json::Value) -> (Duration, Vec<Duration>) {
    let mut samples = Vec::with_capacity(CALLS);
    let t = Instant::now();
    for _ in 0..CALLS {
        let s = Instant::now();
        let plan = engine::compile_call("http", args, &engine::CompileOptions::default())
            .expect("compiles");
        let o = engine.execute(&plan, serde_json::Map::new(), &RunOptions::default());
        assert!(o.ok(), "{:?}", o.steps);
        samples.push(s.elapsed());
    }
    let total = t.elapsed();
    samples.sort();
    (total, samples)
}

/// curl fetching the URL 1,000 times in one process, with `extra` arguments.
fn curl(dir: &std::path::Path, url: &str, extra: &[&str]) -> Duration {
    let list = dir.join("urls");
    let config: String = (0..CALLS)
        .map(|_| format!("url = \"{url}\"\noutput = \"/dev/null\"\n"))
        .collect();
    std::fs::write(&list, config).expect("curl config");
    let t = Instant::now();
    let st = Command::new("curl")
        .args(["-s", "-S", "--fail"])
        .args(extra)
        .arg("-K")
        .arg(&list)
        .stdout(Stdio::null())
        .status()
        .expect("curl");
    assert!(st.success());
    t.elapsed()
}

fn main() {
    let srv = support::http::HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::new(Config::at(dir.path()), Arc::new(engine::Catalog::builtin()));
    let url = srv.url("/json");
    let kept = infra(
        &engine,
        &json!({"action": "request", "url": url, "timeout_ms": 30000}),
    );
    let fresh = infra(&engine, &json!({"action": "request", "url": url}));
    let curl_kept = curl(dir.path(), &url, &[]);
    let curl_fresh = curl(dir.path(), &url, &["-H", "Connection: close"]);
    assert!(srv.hits("/json") >= 4 * CALLS);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{CALLS} sequential GETs of a small JSON body from a loopback server:\n");
    println!("| client | total | per request |");
    println!("| --- | --- | --- |");
    for (what, (total, samples)) in [
        ("with `timeout_ms`: kept-alive", &kept),
        ("without a deadline: a connection each", &fresh),
    ] {
        println!(
            "| infra http.request {what} (engine: plan, evidence, audit) | {:.0} ms | median {:.3} ms, p99 {:.3} ms |",
            ms(*total),
            ms(samples[CALLS / 2]),
            ms(samples[CALLS * 99 / 100])
        );
    }
    for (what, total) in [
        ("kept-alive", curl_kept),
        ("`Connection: close`", curl_fresh),
    ] {
        println!(
            "| curl, one process, {what} | {:.0} ms | mean {:.3} ms |",
            ms(total),
            ms(total) / CALLS as f64
        );
    }
    println!(
        "\ninfra / curl time: {:.1}x kept-alive, {:.1}x a connection each",
        kept.0.as_secs_f64() / curl_kept.as_secs_f64(),
        fresh.0.as_secs_f64() / curl_fresh.as_secs_f64()
    );
}
