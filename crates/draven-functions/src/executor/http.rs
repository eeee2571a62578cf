//! The client side of the function HTTP contract: a small stack of kept-alive HTTP/1.1
//! connections to one instance, on hyper's connection API. One instance serves a known number
//! of invocations at once, so a per-instance stack is all the pooling needed; it skips the URL
//! parsing and pool keying of a general client on the hot path.

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::net::SocketAddr;

/// A function's answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

#[derive(Debug)]
pub enum CallError {
    /// Could not connect: nothing was delivered.
    Connect(std::io::Error),
    /// The connection broke after the request was (maybe) delivered.
    Broken(String),
    /// The answer was larger than allowed.
    TooLarge,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "cannot connect: {e}"),
            CallError::Broken(e) => write!(f, "connection broken: {e}"),
            CallError::TooLarge => write!(f, "the answer exceeds the response size limit"),
        }
    }
}

pub struct Conns {
    addr: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    max_idle: usize,
    max_answer_bytes: usize,
}

impl Conns {
    pub fn new(addr: SocketAddr, max_idle: usize, max_answer_bytes: usize) -> Conns {
        Conns {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).expect("socket address is a header"),
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle,
            max_answer_bytes,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn checkout(&self) -> Result<SendRequest<Full<Bytes>>, CallError> {
        loop {
            let Some(c) = self.idle.lock().pop() else {
                break;
            };
            if c.is_ready() {
                return Ok(c);
            }
        }
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(CallError::Connect)?;
        stream.set_nodelay(true).ok();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CallError::Broken(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends `req` (its `Host` is set here) and reads the whole answer.
    pub async fn call(&self, mut req: Request<Full<Bytes>>) -> Result<Answer, CallError> {
        req.headers_mut().insert(http::header::HOST, self.host.clone());
        let mut sender = self.checkout().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| CallError::Broken(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, self.max_answer_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    CallError::TooLarge
                } else {
                    CallError::Broken(e.to_string())
                }
            })?
            .to_bytes();
        if !sender.is_closed() {
            let mut idle = self.idle.lock();
            if idle.len() < self.max_idle {
                idle.push(sender);
            }
        }
        Ok(Answer {
            status: parts.status,
            content_type: parts.headers.get(http::header::CONTENT_TYPE).cloned(),
            body,
        })
    }

    /// Drops kept-alive connections (the instance is gone).
    pub fn clear(&self) {
        self.idle.lock().clear();
    }
}
