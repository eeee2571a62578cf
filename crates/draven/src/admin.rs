//! `draven admin …`: tenants, users, tokens, grants, environments, functions and the audit trail, straight in the
//! database (works while the server is down). Every change is audited as `cli:<os user>`.

use crate::config::{Config, StoreArgs};
use crate::serve::open_db;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use draven_core::{Grant, Role, Slug, TokenScope};
use draven_store::audit::{Actor, Verification};
use draven_store::identity::NewUser;
use draven_store::Db;
use std::io::{BufRead, Write};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Tenants.
    #[command(subcommand)]
    Tenants(TenantCmd),
    /// Users of a tenant.
    #[command(subcommand)]
    Users(UserCmd),
    /// API tokens.
    #[command(subcommand)]
    Tokens(TokenCmd),
    /// Role grants.
    #[command(subcommand)]
    Grants(GrantCmd),
    /// Environments and their protection.
    #[command(subcommand)]
    Environments(EnvironmentCmd),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Function definitions (a running server picks changes up within seconds).
    #[command(subcommand)]
    Functions(FunctionCmd),
}

#[derive(Subcommand, Debug)]
enum FunctionCmd {
    /// Create or replace a definition from a JSON file (`-` for stdin).
    Put {
        #[arg(long, default_value = "default")]
        tenant: String,
        name: String,
        file: std::path::PathBuf,
    },
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Print a definition as JSON.
    Show {
        #[arg(long, default_value = "default")]
        tenant: String,
        name: String,
    },
    Delete {
        #[arg(long, default_value = "default")]
        tenant: String,
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum TenantCmd {
    /// Create a tenant with its first administrator; prints the admin's token once.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        display_name: String,
        #[arg(long, default_value = "admin")]
        admin: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    Create {
        #[arg(long, default_value = "default")]
        tenant: String,
        username: String,
        #[arg(long, default_value = "")]
        display_name: String,
        #[arg(long, default_value = "")]
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    Disable {
        #[arg(long, default_value = "default")]
        tenant: String,
        username: String,
    },
    Enable {
        #[arg(long, default_value = "default")]
        tenant: String,
        username: String,
    },
    /// Set a user's password (for the web UI), read from the first line of standard input.
    Password {
        #[arg(long, default_value = "default")]
        tenant: String,
        username: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Create a token; prints it once.
    Create {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// Narrow the token (repeatable): read, write, deploy, approve, invoke, admin.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// RFC 3339 expiry time.
        #[arg(long)]
        expires_at: Option<String>,
    },
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        user: Option<String>,
    },
    Revoke {
        #[arg(long, default_value = "default")]
        tenant: String,
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum GrantCmd {
    Add {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        environment: Option<String>,
    },
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        user: Option<String>,
    },
    Remove {
        #[arg(long, default_value = "default")]
        tenant: String,
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum EnvironmentCmd {
    Create {
        #[arg(long, default_value = "default")]
        tenant: String,
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Deploying to or approving on it needs a grant naming it.
        #[arg(long)]
        protected: bool,
    },
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Require grants naming this environment to deploy or approve.
    Protect {
        #[arg(long, default_value = "default")]
        tenant: String,
        name: String,
    },
    Unprotect {
        #[arg(long, default_value = "default")]
        tenant: String,
        name: String,
    },
    Delete {
        #[arg(long, default_value = "default")]
        tenant: String,
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Check the whole hash chain; exits 1 if a record was changed or removed.
    Verify,
    /// Write the trail as JSON lines (oldest first).
    Export {
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// File to write instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

fn cli_actor(tenant_id: Option<String>) -> Actor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    Actor {
        tenant_id,
        name: format!("cli:{user}"),
        request_id: None,
        client_addr: None,
    }
}

async fn tenant_id(db: &Db, name: &str) -> Result<String> {
    Ok(db
        .tenant_by_name(name)
        .await
        .map_err(draven_core::Error::from)
        .with_context(|| format!("tenant {name:?}"))?
        .id)
}

async fn user_id(db: &Db, tenant: &str, user: &str) -> Result<String> {
    Ok(db
        .get_user(tenant, user)
        .await
        .map_err(draven_core::Error::from)
        .with_context(|| format!("user {user:?}"))?
        .id)
}

fn domain<T>(r: Result<T, draven_store::StoreError>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!(draven_core::Error::from(e)))
}

pub async fn run(args: AdminArgs) -> Result<ExitCode> {
    let config = Config::resolve_store(&args.store)?;
    let db = open_db(&config).await?;
    let code = dispatch(&db, args.command).await;
    db.close().await;
    code
}

async fn dispatch(db: &Db, command: AdminCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        AdminCommand::Tenants(TenantCmd::Create {
            name,
            display_name,
            admin,
        }) => {
            let slug = Slug::parse("name", &name)?;
            let (t, u, token) = domain(
                db.create_tenant_with_admin(&cli_actor(None), &slug, &display_name, &admin)
                    .await,
            )?;
            writeln!(
                out,
                "created tenant {} ({}) with administrator {}",
                t.name, t.id, u.username
            )?;
            writeln!(out, "admin token (shown once): {token}")?;
        }
        AdminCommand::Tenants(TenantCmd::List) => {
            let mut cursor = None;
            loop {
                let page = domain(db.list_tenants(cursor.as_deref(), Some(500)).await)?;
                for t in page.items {
                    writeln!(out, "{}\t{}\t{}", t.name, t.id, t.display_name)?;
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        AdminCommand::Users(cmd) => users(db, cmd, &mut out).await?,
        AdminCommand::Tokens(cmd) => tokens(db, cmd, &mut out).await?,
        AdminCommand::Grants(cmd) => grants(db, cmd, &mut out).await?,
        AdminCommand::Environments(cmd) => environments(db, cmd, &mut out).await?,
        AdminCommand::Functions(cmd) => functions(db, cmd, &mut out).await?,
        AdminCommand::Audit(AuditCmd::Verify) => match domain(db.verify_audit().await)? {
            Verification::Intact { records, head } => {
                writeln!(out, "audit trail intact: {records} records, head {head}")?;
            }
            Verification::Broken { seq, problem } => {
                eprintln!("audit trail BROKEN at record {seq}: {problem}");
                return Ok(ExitCode::from(1));
            }
        },
        AdminCommand::Audit(AuditCmd::Export { tenant, output }) => {
            let tenant_id = match &tenant {
                Some(t) => Some(tenant_id(db, t).await?),
                None => None,
            };
            let mut sink: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let mut after = 0;
            let mut n = 0;
            loop {
                let batch = domain(db.audit_batch(tenant_id.as_deref(), after, 1000).await)?;
                let Some(last) = batch.last() else { break };
                after = last.seq;
                for r in batch {
                    serde_json::to_writer(
                        &mut sink,
                        &draven_api::routes::audit::AuditView::from(r),
                    )?;
                    sink.write_all(b"\n")?;
                    n += 1;
                }
            }
            sink.flush()?;
            if output.is_some() {
                writeln!(out, "exported {n} records")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn users(db: &Db, cmd: UserCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        UserCmd::Create {
            tenant,
            username,
            display_name,
            email,
            password_stdin,
        } => {
            let t = tenant_id(db, &tenant).await?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                Some(line.trim_end_matches(['\n', '\r']).to_owned())
            } else {
                None
            };
            let new = NewUser {
                username,
                display_name,
                email,
                password,
                system_admin: false,
            };
            let u = domain(db.create_user(&cli_actor(Some(t.clone())), &t, &new).await)?;
            writeln!(out, "created user {} ({})", u.username, u.id)?;
        }
        UserCmd::List { tenant } => {
            let t = tenant_id(db, &tenant).await?;
            let mut cursor = None;
            loop {
                let page = domain(db.list_users(&t, cursor.as_deref(), Some(500)).await)?;
                for u in page.items {
                    let flags = [(u.system_admin, "system-admin"), (u.disabled, "disabled")]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, f)| *f)
                        .collect::<Vec<_>>()
                        .join(",");
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        u.username, u.id, u.display_name, flags
                    )?;
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        UserCmd::Disable { tenant, username } => {
            let t = tenant_id(db, &tenant).await?;
            let u = user_id(db, &t, &username).await?;
            domain(
                db.set_user_disabled(&cli_actor(Some(t.clone())), &t, &u, true)
                    .await,
            )?;
            writeln!(out, "disabled {username}")?;
        }
        UserCmd::Enable { tenant, username } => {
            let t = tenant_id(db, &tenant).await?;
            let u = user_id(db, &t, &username).await?;
            domain(
                db.set_user_disabled(&cli_actor(Some(t.clone())), &t, &u, false)
                    .await,
            )?;
            writeln!(out, "enabled {username}")?;
        }
        UserCmd::Password { tenant, username } => {
            let t = tenant_id(db, &tenant).await?;
            let u = user_id(db, &t, &username).await?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let password = line.trim_end_matches(['\n', '\r']);
            domain(
                db.set_password(&cli_actor(Some(t.clone())), &t, &u, password)
                    .await,
            )?;
            writeln!(out, "set the password of {username}")?;
        }
    }
    Ok(())
}

async fn tokens(db: &Db, cmd: TokenCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            tenant,
            user,
            name,
            scopes,
            expires_at,
        } => {
            let t = tenant_id(db, &tenant).await?;
            let u = user_id(db, &t, &user).await?;
            let scopes = if scopes.is_empty() {
                None
            } else {
                Some(
                    scopes
                        .iter()
                        .map(|s| s.parse::<TokenScope>())
                        .collect::<Result<Vec<_>, _>>()?,
                )
            };
            let expires = match expires_at {
                Some(s) => Some(chrono_ms(&s)?),
                None => None,
            };
            let (meta, token) = domain(
                db.create_token(
                    &cli_actor(Some(t.clone())),
                    &t,
                    &u,
                    &name,
                    scopes.as_deref(),
                    expires,
                )
                .await,
            )?;
            writeln!(out, "created token {} for {user}", meta.id)?;
            writeln!(out, "token (shown once): {token}")?;
        }
        TokenCmd::List { tenant, user } => {
            let t = tenant_id(db, &tenant).await?;
            let u = match user {
                Some(u) => Some(user_id(db, &t, &u).await?),
                None => None,
            };
            let mut cursor = None;
            loop {
                let page = domain(
                    db.list_tokens(&t, u.as_deref(), cursor.as_deref(), Some(500))
                        .await,
                )?;
                for k in page.items {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    writeln!(
                        out,
                        "{}\t{}\t{}…\t{}\t{}\t{}",
                        k.id,
                        k.name,
                        k.prefix,
                        k.scopes.join(","),
                        k.expires_at.unwrap_or_default(),
                        state
                    )?;
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        TokenCmd::Revoke { tenant, id } => {
            let t = tenant_id(db, &tenant).await?;
            domain(db.revoke_token(&cli_actor(Some(t.clone())), &t, &id).await)?;
            writeln!(out, "revoked {id}")?;
        }
    }
    Ok(())
}

fn chrono_ms(s: &str) -> Result<i64> {
    let Some(t) = draven_store::parse_rfc3339_ms(s) else {
        bail!("{s:?} is not an RFC 3339 time")
    };
    Ok(t)
}

async fn grants(db: &Db, cmd: GrantCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        GrantCmd::Add {
            tenant,
            user,
            role,
            project,
            environment,
        } => {
            let t = tenant_id(db, &tenant).await?;
            let u = user_id(db, &t, &user).await?;
            let grant = Grant {
                role: role.parse::<Role>()?,
                project,
                environment,
            };
            let g = domain(
                db.add_grant(&cli_actor(Some(t.clone())), &t, &u, &grant)
                    .await,
            )?;
            writeln!(out, "granted {} to {user} ({})", g.role, g.id)?;
        }
        GrantCmd::List { tenant, user } => {
            let t = tenant_id(db, &tenant).await?;
            let u = match user {
                Some(u) => Some(user_id(db, &t, &u).await?),
                None => None,
            };
            for g in domain(db.list_grants(&t, u.as_deref()).await)? {
                writeln!(
                    out,
                    "{}\t{}\t{}\tproject={}\tenvironment={}",
                    g.id,
                    g.user_id,
                    g.role,
                    g.project.unwrap_or_else(|| "*".into()),
                    g.environment.unwrap_or_else(|| "*".into())
                )?;
            }
        }
        GrantCmd::Remove { tenant, id } => {
            let t = tenant_id(db, &tenant).await?;
            domain(db.remove_grant(&cli_actor(Some(t.clone())), &t, &id).await)?;
            writeln!(out, "removed grant {id}")?;
        }
    }
    Ok(())
}

async fn functions(db: &Db, cmd: FunctionCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        FunctionCmd::Put { tenant, name, file } => {
            let t = tenant_id(db, &tenant).await?;
            let slug = Slug::parse("name", &name)?;
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let spec = draven_functions::spec::FunctionSpec::parse(
                text.as_bytes(),
                &Default::default(),
                &["local", "kubernetes"],
            )
            .map_err(|e| match &e.field {
                Some(f) => anyhow::anyhow!("{f}: {}", e.message),
                None => anyhow::anyhow!(e),
            })?;
            let (f, created) = domain(
                db.put_function(
                    &cli_actor(Some(t.clone())),
                    &t,
                    slug.as_str(),
                    &serde_json::to_string(&spec)?,
                    None,
                )
                .await,
            )?;
            let verb = if created { "created" } else { "updated" };
            writeln!(out, "{verb} function {} (revision {})", f.name, f.revision)?;
        }
        FunctionCmd::List { tenant } => {
            let t = tenant_id(db, &tenant).await?;
            for f in domain(db.list_functions(&t).await)? {
                writeln!(out, "{}	revision {}	{}", f.name, f.revision, f.updated_at)?;
            }
        }
        FunctionCmd::Show { tenant, name } => {
            let t = tenant_id(db, &tenant).await?;
            let f = domain(db.get_function(&t, &name).await)?;
            let v: serde_json::Value = serde_json::from_str(&f.spec)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        FunctionCmd::Delete { tenant, name } => {
            let t = tenant_id(db, &tenant).await?;
            domain(
                db.delete_function(&cli_actor(Some(t.clone())), &t, &name)
                    .await,
            )?;
            writeln!(out, "deleted function {name}")?;
        }
    }
    Ok(())
}

async fn environments(db: &Db, cmd: EnvironmentCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        EnvironmentCmd::Create {
            tenant,
            name,
            description,
            protected,
        } => {
            let t = tenant_id(db, &tenant).await?;
            let slug = Slug::parse("name", &name)?;
            let e = domain(
                db.create_environment(
                    &cli_actor(Some(t.clone())),
                    &t,
                    &slug,
                    &description,
                    protected,
                )
                .await,
            )?;
            writeln!(
                out,
                "created environment {}{}",
                e.name,
                if e.protected { " (protected)" } else { "" }
            )?;
        }
        EnvironmentCmd::List { tenant } => {
            let t = tenant_id(db, &tenant).await?;
            for e in domain(db.list_environments(&t).await)? {
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    e.name,
                    if e.protected { "protected" } else { "-" },
                    e.description
                )?;
            }
        }
        EnvironmentCmd::Protect { tenant, name } => {
            set_protected(db, &tenant, &name, true, out).await?
        }
        EnvironmentCmd::Unprotect { tenant, name } => {
            set_protected(db, &tenant, &name, false, out).await?
        }
        EnvironmentCmd::Delete { tenant, name } => {
            let t = tenant_id(db, &tenant).await?;
            domain(
                db.delete_environment(&cli_actor(Some(t.clone())), &t, &name, None)
                    .await,
            )?;
            writeln!(out, "deleted environment {name}")?;
        }
    }
    Ok(())
}

async fn set_protected(
    db: &Db,
    tenant: &str,
    name: &str,
    protected: bool,
    out: &mut impl Write,
) -> Result<()> {
    let t = tenant_id(db, tenant).await?;
    let patch = draven_store::environments::EnvironmentPatch {
        protected: Some(protected),
        ..Default::default()
    };
    let e = domain(
        db.update_environment(&cli_actor(Some(t.clone())), &t, name, None, &patch)
            .await,
    )?;
    writeln!(
        out,
        "environment {} is {}",
        e.name,
        if e.protected {
            "protected"
        } else {
            "unprotected"
        }
    )?;
    Ok(())
}
