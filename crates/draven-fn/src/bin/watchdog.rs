//! `draven-watchdog -- <program> [args…]`: serves any stdin→stdout program over the Draven
//! function contract. Each `POST /invoke` starts the program with the payload on stdin and
//! `DRAVEN_INVOCATION_ID`, `TRACEPARENT`, `DRAVEN_DEADLINE` and `CONTENT_TYPE` in its
//! environment; exit status 0 answers 200 with its stdout, any other status answers 500 with
//! its stderr's tail. At the deadline the program's process group is killed (504). Each
//! invocation is logged as one JSON line with its invocation id and trace id.

use draven_fn::{log_line, Request, Response};
use std::process::Stdio;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let program: Vec<String> = match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].to_vec(),
        None => args,
    };
    if program.is_empty() || program[0] == "-h" || program[0] == "--help" {
        eprintln!("usage: draven-watchdog -- <program> [args…]\n\nServes the program over the Draven function contract (POST /invoke, GET /healthz):\nthe payload goes to its stdin, its stdout is the answer.");
        std::process::exit(2);
    }
    let program = std::sync::Arc::new(program);
    draven_fn::run(move |req: Request| {
        let program = program.clone();
        async move { invoke(&program, req).await }
    });
}

async fn invoke(program: &[String], req: Request) -> Response {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&program[0]);
    cmd.args(&program[1..])
        .env("DRAVEN_INVOCATION_ID", &req.invocation_id)
        .env(
            "TRACEPARENT",
            req.traceparent.as_deref().unwrap_or_default(),
        )
        .env(
            "DRAVEN_DEADLINE",
            req.deadline
                .and_then(|d| d.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis().to_string())
                .unwrap_or_default(),
        )
        .env(
            "CONTENT_TYPE",
            req.content_type.as_deref().unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            req.log("error", &format!("cannot start {}: {e}", program[0]));
            return Response::error(500, &format!("cannot start {}: {e}", program[0]));
        }
    };
    let pid = child.id().unwrap_or(0) as libc::pid_t;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let payload = req.body.clone();
    let work = async {
        let write = async move {
            let _ = stdin.write_all(&payload).await;
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (_, o, e) = tokio::join!(
            write,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err)
        );
        o?;
        e?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err))
    };
    let limit = req
        .remaining()
        .unwrap_or(std::time::Duration::from_secs(300));
    let result = tokio::time::timeout(limit, work).await;
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Err(_) => {
            req.log(
                "warn",
                &format!(
                    "{} reached the deadline after {ms:.1} ms and was killed",
                    program[0]
                ),
            );
            Response::error(
                504,
                "the program reached the invocation deadline and was killed",
            )
        }
        Ok(Err(e)) => {
            req.log("error", &format!("{} failed: {e}", program[0]));
            Response::error(500, &format!("{} failed: {e}", program[0]))
        }
        Ok(Ok((status, out, err))) => {
            if !err.is_empty() {
                let text = String::from_utf8_lossy(&err);
                for line in text.lines().take(100) {
                    log_line("info", line, Some(&req.invocation_id), req.trace_id());
                }
            }
            if status.success() {
                req.log("info", &format!("{} exited 0 in {ms:.1} ms", program[0]));
                let ct = req
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into());
                Response::bytes(&ct, out)
            } else {
                req.log(
                    "warn",
                    &format!("{} exited with {status} in {ms:.1} ms", program[0]),
                );
                let tail =
                    String::from_utf8_lossy(&err[err.len().saturating_sub(2048)..]).into_owned();
                Response::error(500, &format!("{} exited with {status}: {tail}", program[0]))
            }
        }
    }
}
