//! A minimal HTTP(S) GET for `grail data fetch`: hyper's HTTP/1 client over a tokio TCP stream,
//! TLS by rustls with the system's root certificates, redirects followed. The body goes to a
//! caller-supplied sink chunk by chunk (the caller hashes and writes it), never into memory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

const MAX_REDIRECTS: usize = 5;
/// Connecting, the response head, and each body chunk must arrive within this.
const STALL: Duration = Duration::from_secs(60);

/// GETs `url` (http or https), following redirects, and feeds the body to `sink`.
pub async fn get(
    url: &str,
    sink: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    for _ in 0..=MAX_REDIRECTS {
        let response = request(&uri).await?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .with_context(|| format!("{uri}: {status} without a Location header"))?;
            uri = redirect_target(&uri, location)?;
            continue;
        }
        if status != StatusCode::OK {
            bail!("{uri}: the server answered {status}");
        }
        let mut body = response.into_body();
        loop {
            let frame = tokio::time::timeout(STALL, body.frame())
                .await
                .with_context(|| format!("{uri}: no data for {}s", STALL.as_secs()))?;
            let Some(frame) = frame else { return Ok(()) };
            let frame = frame.with_context(|| format!("{uri}: reading the body"))?;
            if let Some(chunk) = frame.data_ref() {
                sink(chunk)?;
            }
        }
    }
    bail!("{url}: more than {MAX_REDIRECTS} redirects")
}

/// The absolute URI a `Location` header points to (it may be relative to `base`).
fn redirect_target(base: &Uri, location: &str) -> anyhow::Result<Uri> {
    let target: Uri = location
        .parse()
        .with_context(|| format!("{base}: bad redirect Location {location:?}"))?;
    if target.scheme().is_some() {
        return Ok(target);
    }
    let mut parts = target.into_parts();
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    Uri::from_parts(parts).with_context(|| format!("{base}: bad redirect Location {location:?}"))
}

async fn request(uri: &Uri) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let host = uri
        .host()
        .with_context(|| format!("{uri}: the URL has no host"))?
        .to_string();
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => bail!("{uri}: unsupported scheme {other:?} (use http:// or https://)"),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::time::timeout(STALL, TcpStream::connect((host.as_str(), port)))
        .await
        .with_context(|| format!("{uri}: connecting to {host}:{port} timed out"))?
        .with_context(|| format!("{uri}: cannot connect to {host}:{port}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let request = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("grail/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())?;
    if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("{uri}: {host:?} is not a TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(tls_config()?)
            .connect(name, tcp)
            .await
            .with_context(|| format!("{uri}: TLS handshake with {host} failed"))?;
        send(uri, stream, request).await
    } else {
        send(uri, tcp, request).await
    }
}

async fn send<S>(
    uri: &Uri,
    stream: S,
    request: Request<Empty<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("{uri}: HTTP handshake"))?;
    // Drives the connection; it ends when the response body has been read (or dropped).
    tokio::spawn(connection);
    tokio::time::timeout(STALL, sender.send_request(request))
        .await
        .with_context(|| format!("{uri}: no response in {}s", STALL.as_secs()))?
        .with_context(|| format!("{uri}: request failed"))
}

/// rustls with the platform's root certificates (ring provider, as async-nats uses).
fn tls_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // Skip certificates rustls cannot parse instead of failing every download.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        bail!(
            "no usable system root certificates for HTTPS ({:?}); install the ca-certificates package, or import the files with --from",
            found.errors.first().map(ToString::to_string)
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
