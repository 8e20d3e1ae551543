//! The socket the app serves on. hyper refuses a few requests before any
//! handler or middleware sees them — a request line or header it cannot
//! parse (400), a URI over 64 KiB (414), a head larger than its read buffer
//! (431) — and answers them with a bare status line. Each connection is
//! wrapped so that such an answer is replaced, on its way out, by the one
//! the app gives every other error: the `{"error": …}` envelope on machine
//! paths or the error page for people, with the security headers.
//!
//! The replacements are rendered once, at start, by the app's own router
//! (see [`crate::bare_errors::EdgeRefusal`]), so they carry exactly the
//! headers its other answers carry.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::SystemTime,
};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
    serve::Listener,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tower::ServiceExt;

use crate::bare_errors::{EdgeRefusal, MAX_URI_BYTES, is_machine_path};

/// The statuses hyper answers on its own, with what the app says about them.
const REFUSALS: [(StatusCode, &str); 3] = [
    (
        StatusCode::BAD_REQUEST,
        "the request line or a header could not be parsed",
    ),
    (StatusCode::URI_TOO_LONG, ""),
    (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "the request's headers are too large",
    ),
];

/// How much of a request's first bytes is kept to tell a machine path
/// (`GET /api/…`) from a page.
const KEPT_HEAD: usize = 256;

/// A rendered answer without its per-connection headers.
struct Prepared {
    status: StatusCode,
    /// Header lines (`name: value\r\n`), without date, length and connection.
    headers: Vec<u8>,
    body: Vec<u8>,
}

/// The app's answers to hyper's refusals, per status and audience.
pub struct Refusals {
    prepared: HashMap<(u16, bool), Prepared>,
}

impl Refusals {
    /// Renders every refusal through `router`, the app's complete router.
    pub async fn prepare(router: Router) -> Self {
        let mut prepared = HashMap::new();
        for (status, message) in REFUSALS {
            let message = if message.is_empty() {
                format!("the URI is longer than {MAX_URI_BYTES} bytes")
            } else {
                message.to_owned()
            };
            for machine in [true, false] {
                let mut request = Request::new(Body::empty());
                *request.uri_mut() = if machine { "/api/v1" } else { "/" }
                    .parse()
                    .expect("a static URI parses");
                request.extensions_mut().insert(EdgeRefusal {
                    status,
                    message: message.clone(),
                });
                let response = match router.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                let (parts, body) = response.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                let mut headers = Vec::new();
                for (name, value) in &parts.headers {
                    if [
                        header::DATE,
                        header::CONTENT_LENGTH,
                        header::CONNECTION,
                        header::TRANSFER_ENCODING,
                    ]
                    .contains(name)
                        || name.as_str() == crate::http_trace::REQUEST_ID.as_str()
                    {
                        continue;
                    }
                    headers.extend_from_slice(name.as_str().as_bytes());
                    headers.extend_from_slice(b": ");
                    headers.extend_from_slice(value.as_bytes());
                    headers.extend_from_slice(b"\r\n");
                }
                prepared.insert(
                    (status.as_u16(), machine),
                    Prepared {
                        status: parts.status,
                        headers,
                        body,
                    },
                );
            }
        }
        Self { prepared }
    }

    /// The bytes to send instead of `written`, when `written` is one of
    /// hyper's bare refusals; `request` is the start of what the client
    /// sent.
    fn replacement(&self, written: &[u8], request: &[u8]) -> Option<Vec<u8>> {
        let status = bare_refusal(written)?;
        let prepared = self.prepared.get(&(status, machine_request(request)))?;
        let mut out = Vec::with_capacity(prepared.headers.len() + prepared.body.len() + 160);
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {} {}\r\n",
                prepared.status.as_u16(),
                prepared.status.canonical_reason().unwrap_or("")
            )
            .as_bytes(),
        );
        out.extend_from_slice(&prepared.headers);
        out.extend_from_slice(
            format!(
                "date: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                httpdate::fmt_http_date(SystemTime::now()),
                prepared.body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&prepared.body);
        Some(out)
    }
}

/// The status of `written` when it is an answer hyper made up itself: a
/// complete head, no body, of a status it uses for parse errors, with no
/// header but its own. Every answer of the app carries the security
/// headers, so none of them matches.
fn bare_refusal(written: &[u8]) -> Option<u16> {
    if !written.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut head = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = head.parse(written).ok()? else {
        return None;
    };
    let status = head.code?;
    let own = head.headers.iter().all(|h| {
        let name = h.name.to_ascii_lowercase();
        (name == "content-length" && h.value == b"0") || name == "date" || name == "connection"
    });
    (len == written.len() && own && REFUSALS.iter().any(|(s, _)| s.as_u16() == status))
        .then_some(status)
}

/// Whether the request that starts with `request` is for a machine path.
/// What cannot be read as a request line is answered as a page.
fn machine_request(request: &[u8]) -> bool {
    let mut parts = request.splitn(3, |b| *b == b' ');
    let (Some(_method), Some(target)) = (parts.next(), parts.next()) else {
        return false;
    };
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    // A target cut off at KEPT_HEAD still starts like its path.
    std::str::from_utf8(path).is_ok_and(is_machine_path) || target.starts_with(b"/api/")
}

/// Accepts TCP connections and wraps each one in [`Guarded`].
pub struct EdgeListener {
    inner: TcpListener,
    refusals: Arc<Refusals>,
}

impl EdgeListener {
    pub fn new(inner: TcpListener, refusals: Refusals) -> Self {
        Self {
            inner,
            refusals: Arc::new(refusals),
        }
    }
}

impl Listener for EdgeListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = Listener::accept(&mut self.inner).await;
        // Answers and live-stream events go out as they are written, not
        // held back until the client acknowledges the previous segment
        // (Nagle's algorithm against the client's delayed ACK: up to 40 ms).
        if let Err(err) = io.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY on an accepted connection");
        }
        (Guarded::new(io, self.refusals.clone()), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection whose bare refusals are replaced by the app's answers.
pub struct Guarded<IO> {
    io: IO,
    refusals: Arc<Refusals>,
    /// The first bytes the client sent since the last answer.
    request: Vec<u8>,
    /// Something was written since `request` was last started.
    answered: bool,
    /// A replacement being written, and the length of what it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, refusals: Arc<Refusals>) -> Self {
        Self {
            io,
            refusals,
            request: Vec::new(),
            answered: false,
            replacing: None,
        }
    }
}

impl<IO: AsyncWrite + Unpin> Guarded<IO> {
    /// Writes the pending replacement; ready with the length it stands for.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, _)) = self.replacing.as_mut().filter(|r| r.1 < r.0.len()) {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let stands_for = self.replacing.take().map_or(0, |r| r.2);
        self.answered = true;
        Poll::Ready(Ok(stands_for))
    }

    fn start_replacement(&mut self, buf: &[u8]) -> bool {
        if self.replacing.is_none() {
            self.replacing = self
                .refusals
                .replacement(buf, &self.request)
                .map(|bytes| (bytes, 0, buf.len()));
        }
        self.replacing.is_some()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            if this.answered {
                this.request.clear();
                this.answered = false;
            }
            let room = KEPT_HEAD.saturating_sub(this.request.len());
            this.request
                .extend_from_slice(&fresh[..fresh.len().min(room)]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.start_replacement(buf) {
            return this.poll_replacement(cx);
        }
        let written = ready!(Pin::new(&mut this.io).poll_write(cx, buf));
        this.answered = true;
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper writes a head in one slice: the first one that holds bytes.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && this.start_replacement(first)
        {
            return this.poll_replacement(cx);
        }
        let written = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs));
        this.answered = true;
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_414: &[u8] =
        b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 04:00:00 GMT\r\n\r\n";

    #[test]
    fn hyper_s_own_refusals_are_recognised() {
        assert_eq!(bare_refusal(HYPER_414), Some(414));
        assert_eq!(
            bare_refusal(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
            ),
            Some(431)
        );
        assert_eq!(
            bare_refusal(
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
            ),
            Some(400)
        );
    }

    #[test]
    fn answers_of_the_app_are_left_alone() {
        // Security headers: written by the app.
        assert_eq!(
            bare_refusal(
                b"HTTP/1.1 414 URI Too Long\r\nx-content-type-options: nosniff\r\ncontent-length: 0\r\n\r\n"
            ),
            None
        );
        // A body after the head.
        assert_eq!(
            bare_refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}"),
            None
        );
        // Not a status hyper makes up; not a head at all.
        assert_eq!(
            bare_refusal(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(bare_refusal(b"HTTP/1.1 414 URI Too Long\r\n"), None);
        assert_eq!(bare_refusal(b"{\"HTTP/1.1 414\"}"), None);
    }

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut listener = EdgeListener::new(
            inner,
            Refusals {
                prepared: HashMap::new(),
            },
        );
        let client = tokio::net::TcpStream::connect(addr);
        let ((guarded, _), _client) = tokio::join!(listener.accept(), client);
        assert!(guarded.io.nodelay().unwrap(), "TCP_NODELAY is not set");
    }

    #[test]
    fn the_audience_comes_from_the_request_line() {
        assert!(machine_request(b"GET /api/v1/projects?cursor=aaaa"));
        assert!(machine_request(b"GET /healthz?x=1 HTTP/1.1"));
        assert!(machine_request(b"POST /api/v1/aaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(!machine_request(b"GET /projects?x HTTP/1.1"));
        assert!(!machine_request(b"\x16\x03\x01garbage"));
        assert!(!machine_request(b""));
    }
}
