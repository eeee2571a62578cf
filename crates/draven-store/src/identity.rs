//! Identity: users, API tokens and grants, and turning a presented token into a [`Principal`].
//!
//! Tokens are opaque (`drv_` + 40 random base62 characters), shown once, and stored only as a
//! SHA-256 hash (they carry 238 bits of entropy, so a slow hash adds nothing; passwords, which
//! people choose, get argon2). Lookup is by hash, so any string works as a token, which lets an
//! operator fix the bootstrap token with `DRAVEN_BOOTSTRAP_TOKEN`.

use crate::audit::{append, Actor};
use crate::tenants::create_tenant_in;
use crate::{
    cursor, flag, new_id, now_ms, opt_from_db, opt_to_db, page_limit, paginate, rfc3339, Db, Page,
    Result, Tx,
};
use draven_core::{Error, Grant, Principal, Role, Slug, TokenScope};
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::Row;

pub const TOKEN_PREFIX: &str = "drv_";
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub system_admin: bool,
    pub disabled: bool,
    pub created_at: String,
}

#[derive(Clone, Debug, Default)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub password: Option<String>,
    pub system_admin: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenMeta {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first characters of the token, to recognise it in lists.
    pub prefix: String,
    /// Empty: not narrowed.
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    pub created_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub user_id: String,
    pub role: String,
    pub project: Option<String>,
    pub environment: Option<String>,
    pub created_at: String,
}

/// What the first start created.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub tenant: String,
    pub username: String,
    pub token: String,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn generate_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let body: String = (0..40)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{TOKEN_PREFIX}{body}")
}

fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    if password.chars().count() < 8 {
        return Err(Error::invalid("password", "a password needs at least 8 characters").into());
    }
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| crate::StoreError::Corrupt(format!("argon2: {e}")))
}

fn user(row: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        system_admin: flag(row, "system_admin")?,
        disabled: flag(row, "disabled")?,
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

fn token_meta(row: &sqlx::any::AnyRow) -> Result<TokenMeta> {
    let scopes: String = row.try_get("scopes")?;
    let opt_time = |col: &str| -> Result<Option<String>> {
        Ok(row.try_get::<Option<i64>, _>(col)?.map(rfc3339))
    };
    Ok(TokenMeta {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("token_prefix")?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        expires_at: opt_time("expires_at")?,
        revoked_at: opt_time("revoked_at")?,
        last_used_at: opt_time("last_used_at")?,
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

fn grant_record(row: &sqlx::any::AnyRow) -> Result<GrantRecord> {
    Ok(GrantRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        role: row.try_get("role")?,
        project: opt_from_db(row.try_get("project")?),
        environment: opt_from_db(row.try_get("environment")?),
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

async fn insert_user(tx: &mut Tx, actor: &Actor, tenant_id: &str, new: &NewUser) -> Result<User> {
    let username = Slug::parse("username", &new.username)?;
    let password_hash = match &new.password {
        Some(p) => hash_password(p)?,
        None => String::new(),
    };
    let id = new_id();
    let display = if new.display_name.trim().is_empty() {
        username.as_str()
    } else {
        new.display_name.trim()
    };
    let done = sqlx::query(
        "INSERT INTO users (id, tenant_id, username, display_name, email, password_hash, system_admin, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8) ON CONFLICT (tenant_id, username) DO NOTHING",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(username.as_str())
    .bind(display)
    .bind(new.email.trim())
    .bind(password_hash)
    .bind(new.system_admin as i64)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::conflict(format!("user {username} already exists"))
            .with_field("username")
            .into());
    }
    let row = sqlx::query("SELECT * FROM users WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut **tx)
        .await?;
    let u = user(&row)?;
    append(
        tx,
        actor
            .did("user.create", &format!("user:{username}"))
            .detail(serde_json::json!({"system_admin": new.system_admin})),
    )
    .await?;
    Ok(u)
}

/// A token to create.
#[derive(Clone, Copy, Debug)]
struct NewToken<'a> {
    user_id: &'a str,
    name: &'a str,
    scopes: Option<&'a [TokenScope]>,
    expires_at_ms: Option<i64>,
    /// The operator's chosen value (bootstrap); random otherwise.
    chosen: Option<&'a str>,
}

async fn insert_token(
    tx: &mut Tx,
    actor: &Actor,
    tenant_id: &str,
    new: NewToken<'_>,
) -> Result<(TokenMeta, String)> {
    let NewToken {
        user_id,
        name,
        scopes,
        expires_at_ms,
        chosen: secret,
    } = new;
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(Error::invalid("name", "a token needs a name of 1-100 characters").into());
    }
    if let Some(exp) = expires_at_ms {
        if exp <= now_ms() {
            return Err(Error::invalid("expires_at", "expires_at must be in the future").into());
        }
    }
    let token = match secret {
        Some(s) if s.len() < MIN_TOKEN_LEN => {
            return Err(Error::invalid(
                "token",
                format!("a chosen token needs at least {MIN_TOKEN_LEN} characters"),
            )
            .into())
        }
        Some(s) => s.to_owned(),
        None => generate_token(),
    };
    let scopes_text = scopes
        .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let id = new_id();
    let prefix: String = token.chars().take(8).collect();
    sqlx::query(
        "INSERT INTO api_tokens (id, tenant_id, user_id, name, token_prefix, token_hash, scopes, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(user_id)
    .bind(name)
    .bind(&prefix)
    .bind(hash_token(&token))
    .bind(&scopes_text)
    .bind(expires_at_ms)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut **tx)
        .await?;
    let meta = token_meta(&row)?;
    append(
        tx,
        actor
            .did("token.create", &format!("token:{id}"))
            .detail(serde_json::json!({"user_id": user_id, "name": name, "scopes": meta.scopes})),
    )
    .await?;
    Ok((meta, token))
}

async fn insert_grant(
    tx: &mut Tx,
    actor: &Actor,
    tenant_id: &str,
    user_id: &str,
    grant: &Grant,
) -> Result<GrantRecord> {
    for (field, v) in [
        ("project", &grant.project),
        ("environment", &grant.environment),
    ] {
        if let Some(v) = v {
            Slug::parse(field, v)?;
        }
    }
    let id = new_id();
    let done = sqlx::query(
        "INSERT INTO grants (id, tenant_id, user_id, role, project, environment, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, role, project, environment) DO NOTHING",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(user_id)
    .bind(grant.role.as_str())
    .bind(opt_to_db(&grant.project))
    .bind(opt_to_db(&grant.environment))
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::conflict("this user already has this grant").into());
    }
    let row = sqlx::query("SELECT * FROM grants WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut **tx)
        .await?;
    let g = grant_record(&row)?;
    append(
        tx,
        actor.did("grant.create", &format!("grant:{id}")).detail(serde_json::json!({
            "user_id": user_id, "role": g.role, "project": g.project, "environment": g.environment
        })),
    )
    .await?;
    Ok(g)
}

/// A new tenant's first administrator: the user, a tenant-wide admin grant and a token.
async fn add_first_admin(
    tx: &mut Tx,
    actor: &Actor,
    tenant_id: &str,
    new: &NewUser,
    token_name: &str,
    chosen_token: Option<&str>,
) -> Result<(User, String)> {
    let actor = Actor {
        tenant_id: Some(tenant_id.to_owned()),
        ..actor.clone()
    };
    let u = insert_user(tx, &actor, tenant_id, new).await?;
    insert_grant(
        tx,
        &actor,
        tenant_id,
        &u.id,
        &Grant::tenant_wide(Role::Admin),
    )
    .await?;
    let token = NewToken {
        user_id: &u.id,
        name: token_name,
        scopes: None,
        expires_at_ms: None,
        chosen: chosen_token,
    };
    let (_, token) = insert_token(tx, &actor, tenant_id, token).await?;
    Ok((u, token))
}

impl Db {
    /// On a database with no users: creates tenant `default`, its system administrator `admin`
    /// with a tenant-wide admin grant, and a token (`chosen_token`, or a random one). Returns
    /// `None` when users already exist. Safe against two servers starting at once: the tenant
    /// insert conflicts for the second.
    pub async fn bootstrap(&self, chosen_token: Option<&str>) -> Result<Option<Bootstrap>> {
        let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        if users > 0 {
            return Ok(None);
        }
        let mut tx = self.begin().await?;
        let actor = Actor::system();
        let name = Slug::parse("tenant", "default")?;
        let tenant = match create_tenant_in(&mut tx, &actor, &name, "Default").await {
            Ok(t) => t,
            Err(e) if matches!(&e, crate::StoreError::Domain(d) if d.code == draven_core::ErrorCode::Conflict) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let admin = NewUser {
            username: "admin".into(),
            display_name: "Administrator".into(),
            system_admin: true,
            ..NewUser::default()
        };
        let (u, token) = add_first_admin(
            &mut tx,
            &actor,
            &tenant.id,
            &admin,
            "bootstrap",
            chosen_token,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Bootstrap {
            tenant: tenant.name,
            username: u.username,
            token,
        }))
    }

    /// Creates a tenant with its first administrator (a tenant-wide admin grant and a token),
    /// all in one transaction. Returns the tenant, the admin and the token (shown once).
    pub async fn create_tenant_with_admin(
        &self,
        actor: &Actor,
        name: &Slug,
        display_name: &str,
        admin_username: &str,
    ) -> Result<(crate::tenants::Tenant, User, String)> {
        let mut tx = self.begin().await?;
        let tenant = create_tenant_in(&mut tx, actor, name, display_name).await?;
        let new = NewUser {
            username: admin_username.to_owned(),
            ..NewUser::default()
        };
        let (u, token) =
            add_first_admin(&mut tx, actor, &tenant.id, &new, "initial admin", None).await?;
        tx.commit().await?;
        Ok((tenant, u, token))
    }

    pub async fn create_user(&self, actor: &Actor, tenant_id: &str, new: &NewUser) -> Result<User> {
        let mut tx = self.begin().await?;
        let u = insert_user(&mut tx, actor, tenant_id, new).await?;
        tx.commit().await?;
        Ok(u)
    }

    /// A user by id or username, in `tenant_id` only (another tenant's user is "not found").
    pub async fn get_user(&self, tenant_id: &str, id_or_name: &str) -> Result<User> {
        let row =
            sqlx::query("SELECT * FROM users WHERE tenant_id = $1 AND (id = $2 OR username = $2)")
                .bind(tenant_id)
                .bind(id_or_name)
                .fetch_optional(self.pool())
                .await?
                .ok_or_else(|| Error::not_found("user"))?;
        user(&row)
    }

    pub async fn list_users(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<User>> {
        let limit = page_limit(limit)?;
        let after = after.map(cursor::decode).transpose()?.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT * FROM users WHERE tenant_id = $1 AND username > $2 ORDER BY username LIMIT $3",
        )
        .bind(tenant_id)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows.iter().map(user).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |u| u.username.clone()))
    }

    /// Disables or re-enables a user; a disabled user's tokens stop working at once.
    pub async fn set_user_disabled(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        disabled: bool,
    ) -> Result<User> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(disabled as i64)
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("user").into());
        }
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        let u = user(&row)?;
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        append(&mut tx, actor.did(action, &format!("user:{}", u.username))).await?;
        tx.commit().await?;
        Ok(u)
    }

    pub async fn set_password(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        password: &str,
    ) -> Result<()> {
        let hash = hash_password(password)?;
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE users SET password_hash = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(hash)
                .bind(tenant_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("user").into());
        }
        append(
            &mut tx,
            actor.did("user.set-password", &format!("user:{user_id}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks a username/password in a tenant (for sign-in). `None` for any mismatch, without
    /// saying which part was wrong.
    pub async fn check_password(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
    ) -> Result<Option<User>> {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let row = sqlx::query(
            "SELECT u.* FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE t.name = $1 AND u.username = $2 AND u.disabled = 0",
        )
        .bind(tenant)
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("password_hash")?;
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return Ok(None);
        };
        if argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
        {
            Ok(Some(user(&row)?))
        } else {
            Ok(None)
        }
    }

    pub async fn create_token(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        name: &str,
        scopes: Option<&[TokenScope]>,
        expires_at_ms: Option<i64>,
    ) -> Result<(TokenMeta, String)> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT id FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::not_found("user").into());
        }
        let out = insert_token(
            &mut tx,
            actor,
            tenant_id,
            NewToken {
                user_id,
                name,
                scopes,
                expires_at_ms,
                chosen: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn list_tokens(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<TokenMeta>> {
        let limit = page_limit(limit)?;
        let after = after.map(cursor::decode).transpose()?.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT * FROM api_tokens WHERE tenant_id = $1 AND ($2 = '' OR user_id = $2) AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(tenant_id)
        .bind(user_id.unwrap_or_default())
        .bind(after)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows.iter().map(token_meta).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |t| t.id.clone()))
    }

    pub async fn token_meta(&self, tenant_id: &str, token_id: &str) -> Result<TokenMeta> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(token_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("token"))?;
        token_meta(&row)
    }

    /// Revokes a token; idempotent for an already revoked one.
    pub async fn revoke_token(
        &self,
        actor: &Actor,
        tenant_id: &str,
        token_id: &str,
    ) -> Result<TokenMeta> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(tenant_id)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT * FROM api_tokens WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(token_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found("token"))?;
        if done.rows_affected() > 0 {
            append(
                &mut tx,
                actor.did("token.revoke", &format!("token:{token_id}")),
            )
            .await?;
        }
        let meta = token_meta(&row)?;
        tx.commit().await?;
        Ok(meta)
    }

    /// Resolves a presented token to its principal: `None` when unknown, revoked, expired, or
    /// its user is disabled.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        let row = sqlx::query(
            "SELECT k.id AS token_id, k.scopes, k.expires_at, k.revoked_at, k.last_used_at, u.id AS user_id, u.username, u.system_admin, u.disabled, t.id AS tenant_id, t.name AS tenant
             FROM api_tokens k JOIN users u ON u.id = k.user_id JOIN tenants t ON t.id = k.tenant_id
             WHERE k.token_hash = $1",
        )
        .bind(hash_token(token))
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let now = now_ms();
        let expired = row
            .try_get::<Option<i64>, _>("expires_at")?
            .is_some_and(|e| e <= now);
        let revoked = row.try_get::<Option<i64>, _>("revoked_at")?.is_some();
        if expired || revoked || flag(&row, "disabled")? {
            return Ok(None);
        }
        let user_id: String = row.try_get("user_id")?;
        let token_id: String = row.try_get("token_id")?;
        let scopes: String = row.try_get("scopes")?;
        let token_scopes = if scopes.is_empty() {
            None
        } else {
            Some(
                scopes
                    .split(',')
                    .map(str::parse::<TokenScope>)
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        let grants = self.grants_of(&user_id).await?;
        // Recording last use costs a write; once a minute per token is plenty.
        let last_used = row.try_get::<Option<i64>, _>("last_used_at")?.unwrap_or(0);
        if now - last_used > 60_000 {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&token_id)
                .execute(self.pool())
                .await?;
        }
        Ok(Some(Principal {
            tenant_id: row.try_get("tenant_id")?,
            tenant: row.try_get("tenant")?,
            user_id,
            username: row.try_get("username")?,
            system_admin: flag(&row, "system_admin")?,
            grants,
            token_scopes,
            token_id: Some(token_id),
        }))
    }

    pub(crate) async fn grants_of(&self, user_id: &str) -> Result<Vec<Grant>> {
        let rows = sqlx::query("SELECT role, project, environment FROM grants WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Grant {
                    role: r.try_get::<String, _>("role")?.parse::<Role>()?,
                    project: opt_from_db(r.try_get("project")?),
                    environment: opt_from_db(r.try_get("environment")?),
                })
            })
            .collect()
    }

    pub async fn add_grant(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        grant: &Grant,
    ) -> Result<GrantRecord> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT id FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::not_found("user").with_field("user_id").into());
        }
        let g = insert_grant(&mut tx, actor, tenant_id, user_id, grant).await?;
        tx.commit().await?;
        Ok(g)
    }

    pub async fn list_grants(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<GrantRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM grants WHERE tenant_id = $1 AND ($2 = '' OR user_id = $2) ORDER BY id",
        )
        .bind(tenant_id)
        .bind(user_id.unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(grant_record).collect()
    }

    pub async fn remove_grant(&self, actor: &Actor, tenant_id: &str, grant_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        // A tenant must keep at least one tenant-wide admin, or nobody could manage it again.
        let target = sqlx::query(
            "SELECT role, project, environment FROM grants WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(grant_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found("grant"))?;
        let is_admin_grant = target.try_get::<String, _>("role")? == "admin"
            && target.try_get::<String, _>("project")?.is_empty()
            && target.try_get::<String, _>("environment")?.is_empty();
        if is_admin_grant {
            let admins: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM grants g JOIN users u ON u.id = g.user_id WHERE g.tenant_id = $1 AND g.role = 'admin' AND g.project = '' AND g.environment = '' AND u.disabled = 0",
            )
            .bind(tenant_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if admins <= 1 {
                return Err(Error::conflict(
                    "this is the tenant's last admin grant; grant admin to someone else first",
                )
                .into());
            }
        }
        let done = sqlx::query("DELETE FROM grants WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("grant").into());
        }
        append(
            &mut tx,
            actor.did("grant.delete", &format!("grant:{grant_id}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
