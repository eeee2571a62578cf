//! The `draven` binary: command line, configuration and the wiring of the crates below it.
//! It holds no domain logic: commands resolve configuration, open storage and call into the
//! store or the API crate.

mod admin;
mod config;
mod kube;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "draven",
    version,
    about = "Draven: release and runtime control plane (registry, deploy, functions)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (API, web UI, deploy engine and function gateway).
    Serve(Box<config::ServeArgs>),
    /// Run deploy jobs for a Draven server (the self-hosted runner agent).
    Runner(config::RunnerArgs),
    /// Apply pending database migrations and exit.
    Migrate(config::StoreArgs),
    /// Administer tenants, users, tokens, grants, environments, functions and the audit trail directly in the database.
    Admin(admin::AdminArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Print the version.
    Version,
}

/// mimalloc: the gateway allocates per request on every worker thread, and glibc's arenas
/// serialized those threads on their locks (seen in `perf` under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc reads its options from the environment once, when the process starts. With its
/// defaults (transparent huge pages, eager arena commit, delayed purging) an idle server
/// measured 33–45 MB; with `MIMALLOC_ALLOW_THP=0 MIMALLOC_ARENA_EAGER_COMMIT=0
/// MIMALLOC_PURGE_DELAY=0` it measured 24 MB (SPEC P3: ≤ 30 MB). Setting them at run time is
/// too late, so the binary re-executes itself once with them (same pid, same arguments;
/// settings the operator made are left alone).
fn with_allocator_options() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(argv0) = args.next() {
        cmd.arg0(argv0);
    }
    cmd.args(args);
    for (k, v) in [
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
        ("MIMALLOC_PURGE_DELAY", "0"),
    ] {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    let err = cmd.env("MIMALLOC_ALLOW_THP", "0").exec();
    // exec only returns on failure: carry on with the defaults.
    eprintln!("draven: could not re-execute with allocator options ({err}); continuing");
}

fn main() -> ExitCode {
    with_allocator_options();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Runner(args) => serve::runner(args).await,
            Command::Migrate(store) => serve::migrate(store).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Openapi => {
                println!("{}", serde_json::to_string_pretty(&draven_api::openapi())?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Version => {
                println!("draven {}", env!("CARGO_PKG_VERSION"));
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
