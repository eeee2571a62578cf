//! The sync example: `{"name": "Ada"}` → `{"greeting": "Hello, Ada!"}`. An empty payload is a
//! no-op that answers `{}` (the benchmarks' function). `{"sleep_ms": n}` waits first and
//! `{"fail": true}` answers 500 (for the timeout and retry tests).

use draven_fn::{Request, Response};
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct Input {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    fail: bool,
    #[serde(default)]
    exit: bool,
}

fn main() {
    draven_fn::run(|req: Request| async move {
        if req.body.is_empty() {
            return Response::bytes("application/json", &b"{}"[..]);
        }
        let input: Input = match req.json() {
            Ok(i) => i,
            Err(bad) => return bad,
        };
        if input.sleep_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(input.sleep_ms)).await;
        }
        if input.exit {
            // Simulates a crash mid-invocation.
            std::process::exit(3);
        }
        if input.fail {
            req.log("warn", "failing on request");
            return Response::error(500, "failing as asked");
        }
        let name = input.name.unwrap_or_else(|| "world".into());
        req.log("info", &format!("greeting {name}"));
        Response::json(&serde_json::json!({ "greeting": format!("Hello, {name}!") }))
    })
}
