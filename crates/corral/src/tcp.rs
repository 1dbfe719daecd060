//! Outgoing connections: TCP (HTTP probes, etcd), TLS over TCP (etcd),
//! and the control socket (the CLI). One connection
//! type for all of them, so hyper's client exists once in the binary
//! whatever it talks to (two copies cost ~20 KB of resident code).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection: plain TCP, or TLS over it.
pub enum Conn {
    Plain(TcpStream),
    Unix(tokio::net::UnixStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    /// Connects to "host:port" (TLS when `tls` is given), with TCP_NODELAY,
    /// and TCP keep-alive probes after `keepalive` of silence when given (a
    /// long stream then notices a peer that vanished).
    pub async fn connect(
        addr: &str,
        keepalive: Option<Duration>,
        tls: Option<&Tls>,
    ) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        if let Some(idle) = keepalive {
            set_keepalive(&stream, idle);
        }
        match tls {
            None => Ok(Conn::Plain(stream)),
            Some(tls) => tls.wrap(addr, stream).await,
        }
    }
}

/// Keep-alive probes after `idle`, every second, three of them.
fn set_keepalive(stream: &TcpStream, idle: Duration) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let secs = libc::c_int::try_from(idle.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    for (level, name, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
    ] {
        // SAFETY: setsockopt on a socket we own, with an int option value.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How to talk TLS to a server: whom to trust, and who we are.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    /// The files it came from, named when a handshake fails.
    ca: std::path::PathBuf,
    cert: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Trusts the CA certificates in `ca` (PEM); presents the certificate
    /// and key in `client` (PEM), when given, to a server that asks. The
    /// files are read as config files are (regular files, bounded).
    pub fn load(
        ca: &std::path::Path,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Tls, String> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |path: &std::path::Path| {
            crate::config::files::read(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
            let list = CertificateDer::pem_slice_iter(&read(path)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if list.is_empty() {
                return Err(format!("{}: no certificate in it", path.display()));
            }
            Ok(list)
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => {
                let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                    .map_err(|e| format!("{}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(certs(cert)?, key)
                    .map_err(|e| format!("{}: {e}", cert.display()))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            ca: ca.to_path_buf(),
            cert: client.map(|(cert, _)| cert.to_path_buf()),
        })
    }

    async fn wrap(&self, addr: &str, stream: TcpStream) -> io::Result<Conn> {
        use tokio_rustls::rustls::pki_types::ServerName;
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_matches(['[', ']']);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = self
            .connector
            .connect(name, stream)
            .await
            .map_err(|e| self.explain(e))?;
        Ok(Conn::Tls(Box::new(tls)))
    }

    /// A failed handshake, said with the file to look at.
    fn explain(&self, e: io::Error) -> io::Error {
        match self.describe(&e) {
            Some(said) => io::Error::new(io::ErrorKind::PermissionDenied, said),
            None => e,
        }
    }

    /// What went wrong in TLS, with the file to look at, if `e` (or what
    /// caused it) is a TLS error. A server that refuses the client
    /// certificate says so after the handshake (TLS 1.3), so this is also
    /// asked of errors of the first request.
    pub fn describe(&self, e: &(dyn std::error::Error + 'static)) -> Option<String> {
        use tokio_rustls::rustls::Error;
        let mut cause = Some(e);
        let tls = loop {
            let current = cause?;
            if let Some(tls) = current.downcast_ref::<Error>() {
                break tls;
            }
            let inner = current
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<Error>());
            if let Some(tls) = inner {
                break tls;
            }
            cause = current.source();
        };
        Some(match tls {
            Error::InvalidCertificate(why) => format!(
                "the server's certificate is not accepted ({why:?}), checked against {}",
                self.ca.display()
            ),
            Error::AlertReceived(alert) => match &self.cert {
                Some(cert) => format!(
                    "the server refused the client certificate {} ({alert:?})",
                    cert.display()
                ),
                None => format!(
                    "the server refused the handshake ({alert:?}): does it want a client certificate (tls cert and key)?"
                ),
            },
            other => format!("TLS: {other}"),
        })
    }
}
