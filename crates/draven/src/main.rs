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

// mimalloc's option setter (in the linked static library; the enum values are those of the
// bundled mimalloc v3 `mimalloc.h`, pinned by Cargo.lock's libmimalloc-sys 0.1.49).
extern "C" {
    fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
}
const MI_OPTION_ARENA_EAGER_COMMIT: std::os::raw::c_int = 4;
const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;

fn main() -> ExitCode {
    // Commit arena memory as it is used and give freed memory back at once: an idle server
    // stays small (SPEC P3) at the price of some madvise calls under load.
    // SAFETY: plain option setters of the allocator, called before any thread starts.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
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
