//! `X-Callback-Url` delivery of asynchronous results (SPEC F2).
//!
//! - Signed as [Standard Webhooks](https://www.standardwebhooks.com/) do it:
//!   `webhook-id` (the invocation id), `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`, with the
//!   function's `callback_secret` (a kernel secret).
//! - Restricted by an allow-list, so the gateway cannot be used to reach internal addresses: a
//!   destination address is allowed when it lies in a listed CIDR, or when it is a public
//!   address and the host matches a listed host pattern (or no host pattern is listed). The
//!   check runs when the invocation is accepted and again on every resolved address at
//!   delivery (in the resolver, so a DNS answer cannot swap in an internal address afterwards).
//!   Redirects are not followed.
//! - Retried with exponential backoff; every outcome is counted.

use base64::Engine as _;
use draven_core::Error;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// One CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Whether an address is on the public internet (not loopback, private, link-local, CGNAT,
/// unique-local, multicast, documentation or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Where callbacks may go.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    cidrs: Vec<Cidr>,
    /// `example.com` or `*.example.com`.
    hosts: Vec<String>,
}

impl AllowList {
    /// A comma-separated list of CIDRs and host patterns (`10.0.0.0/8, hooks.example.com,
    /// *.example.org`).
    pub fn parse(s: &str) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if let Some(c) = Cidr::parse(item) {
                list.cidrs.push(c);
            } else if item
                .trim_start_matches("*.")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                list.hosts.push(item.to_ascii_lowercase());
            } else {
                return Err(format!("{item:?} is neither a CIDR nor a host pattern"));
            }
        }
        Ok(list)
    }

    fn host_ok(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts.is_empty()
            || self.hosts.iter().any(|p| match p.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => *p == host,
            })
    }

    /// Whether `ip`, reached under the name `host`, may receive callbacks.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(ip)) || (is_public(ip) && self.host_ok(host))
    }
}

/// Checks a callback URL when the invocation is accepted: its form, and where its host
/// resolves now.
pub async fn check_url(list: &AllowList, url: &str) -> Result<reqwest::Url, Error> {
    let bad = |m: String| Error::invalid("X-Callback-Url", m);
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the callback URL must be http or https".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("the callback URL must not carry credentials".into()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| bad("the callback URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| bad(format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    if addrs.is_empty() || addrs.iter().any(|a| !list.allows(&host, a.ip())) {
        return Err(bad(format!(
            "callbacks to {host} are not allowed (internal address or not on the allow-list)"
        )));
    }
    Ok(parsed)
}

/// A resolver that only returns allowed addresses.
struct Guarded(Arc<AllowList>);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let list = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| list.allows(&host, a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no allowed address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Signs a delivery: the `webhook-signature` value.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Delivers callbacks.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    list: Arc<AllowList>,
    pub attempts: u32,
    pub first_backoff: Duration,
}

/// One delivery.
pub struct Delivery<'a> {
    pub url: &'a reqwest::Url,
    pub invocation_id: &'a str,
    pub function: &'a str,
    pub outcome: &'a str,
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub body: bytes::Bytes,
    pub secret: &'a [u8],
}

impl Deliverer {
    pub fn new(list: AllowList, attempts: u32, first_backoff: Duration) -> Deliverer {
        let list = Arc::new(list);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(Guarded(list.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Deliverer {
            client,
            list,
            attempts: attempts.max(1),
            first_backoff,
        }
    }

    pub fn allow_list(&self) -> &AllowList {
        &self.list
    }

    /// Tries until delivered (2xx) or out of attempts. Returns (attempts made, last error).
    pub async fn deliver(&self, d: &Delivery<'_>) -> (u32, Option<String>) {
        let mut last = None;
        for attempt in 1..=self.attempts {
            match self.once(d).await {
                Ok(()) => return (attempt, None),
                Err(e) => {
                    tracing::warn!(invocation = %d.invocation_id, url = %d.url, attempt, error = %e, "callback delivery failed");
                    last = Some(e);
                }
            }
            if attempt < self.attempts {
                tokio::time::sleep(crate::engine::backoff(
                    self.first_backoff,
                    Duration::from_secs(60),
                    attempt,
                ))
                .await;
            }
        }
        (self.attempts, last)
    }

    async fn once(&self, d: &Delivery<'_>) -> Result<(), String> {
        // IP literals skip the resolver: check them here.
        let host = d.url.host_str().unwrap_or_default();
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            if !self.list.allows(host, ip) {
                return Err(format!("{ip} is not allowed"));
            }
        }
        let ts = chrono_now_s();
        let mut req = self
            .client
            .post(d.url.clone())
            .header("webhook-id", d.invocation_id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                sign(d.secret, d.invocation_id, ts, &d.body),
            )
            .header("x-invocation-id", d.invocation_id)
            .header("x-function", d.function)
            .header("x-function-status", d.status.to_string())
            .header("x-draven-outcome", d.outcome)
            .body(d.body.clone());
        if let Some(ct) = d.content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let resp = req.send().await.map_err(|e| format!("{e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", resp.status()))
        }
    }
}

fn chrono_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_listed() {
        let none = AllowList::parse("").unwrap();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!none.allows("x", ip.parse().unwrap()), "{ip}");
        }
        assert!(none.allows("example.com", "93.184.216.34".parse().unwrap()));
        let listed = AllowList::parse("127.0.0.0/8, hooks.example.com, *.example.org").unwrap();
        assert!(listed.allows("localhost", "127.0.0.1".parse().unwrap()));
        assert!(!listed.allows("localhost", "10.0.0.1".parse().unwrap()));
        assert!(listed.allows("hooks.example.com", "93.184.216.34".parse().unwrap()));
        assert!(listed.allows("a.example.org", "93.184.216.34".parse().unwrap()));
        assert!(!listed.allows("evil.com", "93.184.216.34".parse().unwrap()));
        assert!(AllowList::parse("not a host!").is_err());
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks reference test vector.
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[tokio::test]
    async fn urls_are_checked_when_accepted() {
        let list = AllowList::parse("").unwrap();
        assert!(check_url(&list, "http://127.0.0.1:9/x").await.is_err());
        assert!(check_url(&list, "ftp://example.com/").await.is_err());
        assert!(check_url(&list, "http://user:pw@example.com/")
            .await
            .is_err());
        let local = AllowList::parse("127.0.0.1/32").unwrap();
        assert!(check_url(&local, "http://127.0.0.1:9/x").await.is_ok());
    }
}
