//! Email over SMTP with lettre: plain, STARTTLS or implicit TLS (rustls), optional
//! authentication with the password from a kernel secret.

use super::Message;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// No encryption (a relay on localhost, tests).
    None,
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    /// Default: 587 (STARTTLS), 465 (TLS), 25 (none).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub username: Option<String>,
    /// Secret holding the SMTP password.
    #[serde(default)]
    pub password_secret: Option<String>,
}

pub fn transport(
    s: &SmtpSettings,
    password: Option<&str>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let mut b = match s.tls {
        Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
            .port(s.port.unwrap_or(25)),
        Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
            .map_err(|e| format!("smtp: {e}"))?
            .port(s.port.unwrap_or(587)),
        Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)
            .map_err(|e| format!("smtp: {e}"))?
            .port(s.port.unwrap_or(465)),
    };
    if let (Some(user), Some(pass)) = (&s.username, password) {
        b = b.credentials(Credentials::new(user.clone(), pass.to_owned()));
    }
    Ok(b.timeout(Some(std::time::Duration::from_secs(20))).build())
}

pub fn build(from: &str, to: &[String], m: &Message) -> Result<lettre::Message, String> {
    let mut b = lettre::Message::builder()
        .from(
            from.parse()
                .map_err(|_| format!("from {from:?} is not an address"))?,
        )
        .subject(m.title.clone());
    for t in to {
        b = b.to(t
            .parse()
            .map_err(|_| format!("to {t:?} is not an address"))?);
    }
    let mut body = format!("{}\n\n", m.text);
    for (k, v) in &m.facts {
        body.push_str(&format!("{k}: {v}\n"));
    }
    body.push_str(&format!("\nJob: {}\n", m.job_url));
    if let Some(l) = &m.log_url {
        body.push_str(&format!("Pipeline log: {l}\n"));
    }
    b.header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("building the email: {e}"))
}

pub async fn send(
    s: &SmtpSettings,
    password: Option<&str>,
    from: &str,
    to: &[String],
    m: &Message,
) -> Result<(), String> {
    let email = build(from, to, m)?;
    transport(s, password)?
        .send(email)
        .await
        .map(|_| ())
        .map_err(|e| format!("smtp {}: {e}", s.host))
}
