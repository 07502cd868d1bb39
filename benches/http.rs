//! 1,000 sequential `http.request` GETs through the engine to a loopback server, against `curl`
//! fetching the same 1,000 URLs in one process (one kept-alive connection), in the same run. Run with
//! `cargo bench --bench http`.

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

fn main() {
    let srv = support::http::HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::new(Config::at(dir.path()), Arc::new(engine::Catalog::builtin()));
    let url = srv.url("/json");
    let args = json!({"action": "request", "url": url});
    let mut samples = Vec::with_capacity(CALLS);
    let t = Instant::now();
    for _ in 0..CALLS {
        let s = Instant::now();
        let plan = engine::compile_call("http", &args, &engine::CompileOptions::default())
            .expect("compiles");
        let o = engine.execute(&plan, serde_json::Map::new(), &RunOptions::default());
        assert!(o.ok(), "{:?}", o.steps);
        samples.push(s.elapsed());
    }
    let infra = t.elapsed();
    samples.sort();

    let list = dir.path().join("urls");
    let config: String = (0..CALLS)
        .map(|_| format!("url = \"{url}\"\noutput = \"/dev/null\"\n"))
        .collect();
    std::fs::write(&list, config).expect("curl config");
    let t = Instant::now();
    let st = Command::new("curl")
        .args(["-s", "-S", "--fail", "-K"])
        .arg(&list)
        .stdout(Stdio::null())
        .status()
        .expect("curl");
    let curl = t.elapsed();
    assert!(st.success());
    assert!(srv.hits("/json") >= 2 * CALLS);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{CALLS} sequential GETs of a small JSON body from a loopback server:\n");
    println!("| client | total | per request |");
    println!("| --- | --- | --- |");
    println!(
        "| infra http.request (engine: plan, evidence, audit) | {:.0} ms | median {:.3} ms, p99 {:.3} ms |",
        ms(infra),
        ms(samples[CALLS / 2]),
        ms(samples[CALLS * 99 / 100])
    );
    println!(
        "| curl, one process, kept-alive | {:.0} ms | mean {:.3} ms |",
        ms(curl),
        ms(curl) / CALLS as f64
    );
    println!(
        "\ninfra / curl time: {:.1}x",
        infra.as_secs_f64() / curl.as_secs_f64()
    );
}
