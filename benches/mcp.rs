//! MCP budgets: the size of `tools/list`, cold start to the first `tools/list` answer, and the round trip
//! of `state get` (median and p99 over 1,000 calls), each call a whole engine run with its journal and
//! audit records. Its baseline, in the same run and the same server, is `ping` (1,000, alternated with
//! the calls): the JSON-RPC round trip over the same pipes with no engine behind it, the floor any
//! server shares. Also alternated: `state get` of a new key each time, a call whose plan is not kept. Run with `cargo bench --bench mcp` (release binary; `INFRA_BIN` names another).

#![allow(clippy::print_stdout)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientRequest, PingRequest};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bin = std::env::var("INFRA_BIN").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/infra").to_owned()
        });
        let dir = tempfile::tempdir().expect("tmp");
        let t = Instant::now();
        let mut child = tokio::process::Command::new(&bin)
            .env("MCP_PROFILES_DIR", dir.path())
            .arg("mcp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the release binary (cargo build --release first)");
        let io = (
            child.stdout.take().expect("out"),
            child.stdin.take().expect("in"),
        );
        let client = ().serve(io).await.expect("initialize");
        let tools = client.list_all_tools().await.expect("tools/list");
        let cold = t.elapsed();
        let size = serde_json::to_string(&tools).expect("json").len();
        let mut times: Vec<Duration> = Vec::with_capacity(1000);
        let mut pings: Vec<Duration> = Vec::with_capacity(1000);
        let mut novel: Vec<Duration> = Vec::with_capacity(1000);
        let args = serde_json::json!({"action": "get", "key": "k"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        for i in 0..1000 {
            let t = Instant::now();
            client
                .call_tool(CallToolRequestParams::new("state").with_arguments(args.clone()))
                .await
                .expect("state get");
            times.push(t.elapsed());
            let mut fresh = args.clone();
            fresh.insert("key".into(), format!("k{i}").into());
            let t = Instant::now();
            client
                .call_tool(CallToolRequestParams::new("state").with_arguments(fresh))
                .await
                .expect("state get of a new key");
            novel.push(t.elapsed());
            let t = Instant::now();
            client
                .send_request(ClientRequest::PingRequest(PingRequest {
                    method: Default::default(),
                    extensions: Default::default(),
                }))
                .await
                .expect("ping");
            pings.push(t.elapsed());
        }
        times.sort();
        pings.sort();
        novel.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("tools/list: {} tools, {size} bytes of JSON", tools.len());
        println!(
            "cold start to the first tools/list answer: {:.1} ms",
            ms(cold)
        );
        println!(
            "state get round trip over 1,000 calls: median {:.3} ms, p99 {:.3} ms; ping (same run, alternated): median {:.3} ms, p99 {:.3} ms; ratio of medians {:.2}×, the engine's part {:.3} ms",
            ms(times[500]),
            ms(times[990]),
            ms(pings[500]),
            ms(pings[990]),
            ms(times[500]) / ms(pings[500]),
            ms(times[500]) - ms(pings[500]),
        );
        println!(
            "state get of a key never asked before (a call not seen before, compiled anew): median {:.3} ms, p99 {:.3} ms",
            ms(novel[500]),
            ms(novel[990]),
        );
        let _ = client.cancel().await;
        let _ = child.wait().await;
    });
}
