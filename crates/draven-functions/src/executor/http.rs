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

type Driver = hyper::client::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>;

/// One kept-alive connection: the request handle and the connection's I/O driver. The driver
/// is polled by whoever uses the connection, inside the caller's task, rather than by a task
/// of its own: a call then costs no hand-off between tasks (and threads) in either direction.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: std::pin::Pin<Box<Driver>>,
}

pub struct Conns {
    addr: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<Conn>>,
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

    async fn connect(&self) -> Result<Conn, CallError> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(CallError::Connect)?;
        stream.set_nodelay(true).ok();
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CallError::Broken(e.to_string()))?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
        })
    }

    /// Sends `req` on `conn`; on a kept-alive connection that turns out closed before the
    /// request went out, the request is handed back (`Err(Ok(req))`) to be sent on a new one.
    async fn exchange(
        &self,
        conn: &mut Conn,
        req: Request<Full<Bytes>>,
    ) -> Result<Answer, Result<Request<Full<Bytes>>, CallError>> {
        let Conn { sender, driver } = conn;
        let limit = self.max_answer_bytes;
        let work = async {
            if sender.ready().await.is_err() {
                return Err(Ok(req));
            }
            let resp = match sender.try_send_request(req).await {
                Ok(r) => r,
                Err(mut e) => {
                    return Err(match e.take_message() {
                        Some(req) => Ok(req),
                        None => Err(CallError::Broken(e.error().to_string())),
                    })
                }
            };
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, limit).collect().await.map_err(|e| {
                Err(
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        CallError::TooLarge
                    } else {
                        CallError::Broken(e.to_string())
                    },
                )
            })?;
            Ok(Answer {
                status: parts.status,
                content_type: parts.headers.get(http::header::CONTENT_TYPE).cloned(),
                // A copy: the collected body may be a slice of the connection's read buffer,
                // which a kept record would otherwise hold on to whole.
                body: Bytes::copy_from_slice(&body.to_bytes()),
            })
        };
        tokio::select! {
            biased;
            r = work => r,
            d = driver.as_mut() => Err(Err(CallError::Broken(match d {
                Ok(()) => "the function closed the connection".into(),
                Err(e) => e.to_string(),
            }))),
        }
    }

    /// Sends `req` (its `Host` is set here) and reads the whole answer.
    pub async fn call(&self, mut req: Request<Full<Bytes>>) -> Result<Answer, CallError> {
        req.headers_mut()
            .insert(http::header::HOST, self.host.clone());
        loop {
            let reused = self.idle.lock().pop();
            let fresh = reused.is_none();
            let mut conn = match reused {
                Some(c) => c,
                None => self.connect().await?,
            };
            match self.exchange(&mut conn, req).await {
                Ok(answer) => {
                    if !conn.sender.is_closed() {
                        let mut idle = self.idle.lock();
                        if idle.len() < self.max_idle {
                            idle.push(conn);
                        }
                    }
                    return Ok(answer);
                }
                // Not sent: a stale kept-alive connection; try the next one or a new one.
                Err(Ok(back)) if !fresh => req = back,
                Err(Ok(_)) => {
                    return Err(CallError::Broken(
                        "a new connection closed before the request was sent".into(),
                    ))
                }
                Err(Err(e)) => return Err(e),
            }
        }
    }

    /// Drops kept-alive connections (the instance is gone).
    pub fn clear(&self) {
        self.idle.lock().clear();
    }
}
