//! The async example: a slow job meant for async invocation with a callback.
//! `{"numbers": [3, 1, 2], "work_ms": 200}` → after `work_ms`, `{"count", "sum", "mean",
//! "min", "max", "sorted"}`.

use draven_fn::{Request, Response};
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    numbers: Vec<f64>,
    #[serde(default)]
    work_ms: u64,
}

fn main() {
    draven_fn::run(|req: Request| async move {
        let input: Input = match req.json() {
            Ok(i) => i,
            Err(bad) => return bad,
        };
        req.log(
            "info",
            &format!("building a report of {} numbers", input.numbers.len()),
        );
        tokio::time::sleep(std::time::Duration::from_millis(input.work_ms)).await;
        let mut sorted = input.numbers.clone();
        sorted.sort_by(f64::total_cmp);
        let sum: f64 = sorted.iter().sum();
        let count = sorted.len();
        Response::json(&serde_json::json!({
            "count": count,
            "sum": sum,
            "mean": if count > 0 { sum / count as f64 } else { 0.0 },
            "min": sorted.first(),
            "max": sorted.last(),
            "sorted": sorted,
        }))
    })
}
