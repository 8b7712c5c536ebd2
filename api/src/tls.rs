//! TLS for this project's gRPC servers and clients, from PEM files: the flags every
//! binary takes, and the tonic configurations they make.
//!
//! A server needs a certificate and its key; with a client CA it also requires each
//! client to present a certificate signed by that CA (mutual TLS, how Kelvin and the
//! PEMs authenticate each other). A client trusts the CA that signed the server's
//! certificate, and may present its own certificate.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// How a server is reached over TLS.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// The server's certificate chain (PEM). With --tls-key, the server speaks TLS only.
    #[arg(long, env = "PX_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PX_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept only clients with a certificate signed by this CA (PEM): mutual TLS.
    #[arg(
        long,
        env = "PX_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve without TLS when no certificate is given. Only on a network you trust:
    /// everything, API keys included, travels in the clear.
    #[arg(long, conflicts_with = "tls_cert")]
    pub disable_tls: bool,
}

impl ServerTlsArgs {
    /// The TLS configuration, or `None` when TLS is turned off. The certificate and key
    /// are read again whenever their files change (a Secret volume the operator renews,
    /// or cert-manager's), so a renewed certificate is served without a restart and
    /// without dropping a connection; a changed pair that does not load is logged and
    /// the last good one kept. The client CA is read once.
    ///
    /// # Errors
    /// When a file cannot be read or does not hold what it should, or when there is no
    /// certificate and TLS was not turned off explicitly.
    pub fn server_config(&self) -> anyhow::Result<Option<ServerTls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            anyhow::ensure!(
                self.disable_tls,
                "no TLS certificate: give --tls-cert and --tls-key, or pass --disable-tls to serve in the clear"
            );
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = KeyPairFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let (contents, certified) = files.load(&provider)?;
        let resolver = Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(certified)),
        });
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("no TLS protocol version in common with the crypto provider")?;
        let builder = match &self.tls_client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certificates(&read(ca, "--tls-client-ca")?, ca)? {
                    roots.add(c).with_context(|| {
                        format!("--tls-client-ca {}: not a CA certificate", ca.display())
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .context("--tls-client-ca cannot verify clients")?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&resolver) as Arc<_>);
        // gRPC is HTTP/2: clients (tonic, grpcio, Go) insist on ALPN `h2`.
        config.alpn_protocols = vec![b"h2".to_vec()];
        let watched = Arc::clone(&resolver);
        std::thread::Builder::new()
            .name("tls-reload".to_string())
            .spawn(move || watched.follow(&files, contents, &provider))
            .context("cannot start the thread that reloads the certificate")?;
        Ok(Some(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }))
    }
}

/// How often a served certificate's files are read again. Kubernetes updates a Secret
/// volume within about a minute of the Secret; the operator renews a third of a
/// certificate's lifetime before it expires.
const RELOAD_PERIOD: Duration = Duration::from_secs(5);
/// How long a client may take over its TLS handshake before its connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's TLS: what [`incoming`] wraps the accepted connections in.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

struct KeyPairFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl KeyPairFiles {
    /// The files' bytes, and the key pair they hold.
    fn load(&self, provider: &CryptoProvider) -> anyhow::Result<(Vec<u8>, CertifiedKey)> {
        let cert = read(&self.cert, "--tls-cert")?;
        let key = read(&self.key, "--tls-key")?;
        let chain = certificates(&cert, &self.cert)?;
        let private = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            anyhow::anyhow!("--tls-key {}: no private key ({e})", self.key.display())
        })?;
        let certified = CertifiedKey::from_der(chain, private, provider).with_context(|| {
            format!(
                "--tls-key {} is not the key of --tls-cert {}",
                self.key.display(),
                self.cert.display()
            )
        })?;
        let mut contents = cert;
        contents.extend_from_slice(&key);
        Ok((contents, certified))
    }
}

/// The certificate a server presents: the last pair that loaded.
#[derive(Debug)]
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    /// Reads `files` every [`RELOAD_PERIOD`], on a thread of its own (file reads stay off
    /// the async workers), and serves a pair that changed and loads.
    fn follow(&self, files: &KeyPairFiles, mut contents: Vec<u8>, provider: &CryptoProvider) {
        loop {
            std::thread::sleep(RELOAD_PERIOD);
            match files.load(provider) {
                Ok((now, _)) if now == contents => {}
                Ok((now, certified)) => {
                    contents = now;
                    *self
                        .current
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(certified);
                    tracing::info!(cert = %files.cert.display(), "serving the renewed certificate");
                }
                // Mid-update (a Secret volume swaps both files at once, a hand copy may
                // not): keep the last good pair and try again.
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "the certificate files changed but do not load; still serving the previous certificate"
                    );
                }
            }
        }
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

fn certificates(pem: &[u8], path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not PEM certificates ({e})", path.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{}: no certificate in it",
        path.display()
    );
    Ok(chain)
}

/// A connection a server accepted: TLS, or plain TCP when TLS is off.
#[derive(Debug)]
pub enum Conn {
    /// A TCP connection in the clear.
    Plain(TcpStream),
    /// A TCP connection after its TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The connections `listener` accepts, after their TLS handshake when `tls` is given,
/// for `Server::serve_with_incoming`. Handshakes run concurrently, each with a
/// deadline, so a slow or silent client holds up no one; a failed one is logged at
/// debug level (scanners and clients without a certificate are common) and dropped.
pub fn incoming(
    listener: TcpListenerStream,
    tls: Option<ServerTls>,
) -> impl Stream<Item = std::io::Result<Conn>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut listener = listener;
        while let Some(accepted) = listener.next().await {
            let tcp = match accepted {
                Ok(tcp) => tcp,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match &tls {
                None => {
                    if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tls.acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let peer = tcp.peer_addr().ok();
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(?peer, %error, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Conn::Plain(tcp) => tcp.connect_info(),
            Conn::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A client's TLS settings: whom to trust, and what to present.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The CA that signed the server's certificate (PEM file); `None` trusts none, so
    /// TLS needs it.
    pub ca: Option<PathBuf>,
    /// The client's own certificate and key (PEM files), for servers that require one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry, when not the address's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// The tonic configuration.
    ///
    /// # Errors
    /// When a file cannot be read.
    pub fn config(&self) -> anyhow::Result<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca, "the CA certificate")?));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                read(cert, "the client certificate")?,
                read(key, "the client key")?,
            ));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

impl ClientTls {
    /// [`ClientTls::config`] now, and again whenever the files change (a renewed
    /// certificate in a Secret volume): the receiver sees each new configuration, read
    /// on a thread of its own. New connections take the new one; the caller decides
    /// when to reconnect, so a query in flight keeps the connection it has.
    ///
    /// # Errors
    /// When a file cannot be read now.
    pub fn follow(self) -> anyhow::Result<tokio::sync::watch::Receiver<ClientTlsConfig>> {
        let mut contents = self.contents()?;
        let (tx, rx) = tokio::sync::watch::channel(self.config()?);
        std::thread::Builder::new()
            .name("tls-reload".to_string())
            .spawn(move || {
                while !tx.is_closed() {
                    std::thread::sleep(RELOAD_PERIOD);
                    let Ok(now) = self.contents() else { continue };
                    if now == contents {
                        continue;
                    }
                    match self.config() {
                        Ok(config) => {
                            contents = now;
                            tracing::info!(
                                "the client certificate changed; new connections use it"
                            );
                            let _ = tx.send(config);
                        }
                        Err(error) => tracing::warn!(
                            error = format!("{error:#}"),
                            "the client certificate files changed but do not load"
                        ),
                    }
                }
            })
            .context("cannot start the thread that reloads the client certificate")?;
        Ok(rx)
    }

    /// The bytes of every file this configuration reads.
    fn contents(&self) -> anyhow::Result<Vec<u8>> {
        let mut all = Vec::new();
        if let Some(ca) = &self.ca {
            all.extend(read(ca, "the CA certificate")?);
        }
        if let Some((cert, key)) = &self.identity {
            all.extend(read(cert, "the client certificate")?);
            all.extend(read(key, "the client key")?);
        }
        Ok(all)
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}
