//! # strata-pgwire
//!
//! The PostgreSQL wire protocol (v3) over Strata's SQL sessions, so that psql and every
//! PostgreSQL driver connect unmodified. The protocol itself (framing, startup, SCRAM,
//! portals, cancellation) comes from the `pgwire` crate; this crate binds it to
//! [`strata_sql::Session`]:
//!
//! * **One session per connection** ([`handler`]): the startup `database` parameter picks
//!   the database, the connection's transaction lives in its session, and the session
//!   follows PostgreSQL's rule that an error inside BEGIN aborts the transaction. A
//!   connection that goes away drops its session, and with it any open transaction: an
//!   engine transaction is optimistic, so nothing was written and nothing stays pinned.
//! * **Thin handlers**: statements run through the same session API the embedded callers
//!   use; errors keep the SQLSTATE the SQL layer gives them ([`error`]).
//!
//! Where to look next: `auth.rs` (startup and passwords), `handler.rs` (queries),
//! `values.rs` (parameters and result types).

mod auth;
mod error;
mod guard;
mod handler;
mod values;

use std::sync::Arc;

use pgwire::api::cancel::DefaultCancelHandler;
use strata_engine::Engine;
use strata_sql::Session;
use tokio::net::TcpListener;

pub use auth::Auth;
pub use pgwire::tokio::tokio_rustls::rustls;

/// How the server runs.
#[derive(Clone)]
pub struct Config {
    pub auth: Auth,
    /// TLS for clients that ask for it (`sslmode=require`); without it they are refused
    /// TLS and may go on in plain text.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The database a startup message asks for: `database`, else the user name (as
/// PostgreSQL), else `default`.
pub(crate) fn startup_database<'a>(param: impl Fn(&str) -> Option<&'a String>) -> String {
    param("database")
        .or_else(|| param("user"))
        .filter(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| "default".to_string())
}

/// A PostgreSQL server over an engine.
pub struct Server {
    shared: Arc<auth::Shared>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
}

/// The handlers of one connection.
struct Connection {
    handler: Arc<handler::Handler>,
    startup: Arc<auth::Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

/// A connection that has not finished startup within this long is closed.
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Connection {
    /// Negotiate TLS, then read checked messages and answer them until the client leaves.
    async fn run(
        self,
        socket: tokio::net::TcpStream,
        tls: Option<pgwire::tokio::TlsAcceptor>,
    ) -> std::io::Result<()> {
        use pgwire::tokio::server::negotiate_tls;
        use tokio_util::codec::{Framed, FramedParts};

        let startup_deadline = tokio::time::sleep(STARTUP_TIMEOUT);
        tokio::pin!(startup_deadline);
        let negotiated = tokio::select! {
            _ = &mut startup_deadline => return Ok(()),
            n = negotiate_tls::<Arc<handler::Statement>>(socket, tls) => n?,
        };
        let Some(framed) = negotiated else {
            return Ok(());
        };
        // Whatever the negotiation read ahead is checked like everything after it.
        let parts = framed.into_parts();
        let guarded = guard::Guarded::new(parts.io, parts.read_buf);
        let mut fresh = FramedParts::new(guarded, parts.codec);
        fresh.write_buf = parts.write_buf;
        let mut socket = Framed::from_parts(fresh);
        let served = self.serve(&mut socket, startup_deadline).await;
        // Whatever is still buffered (a last answer, a FATAL error) goes out before the
        // close; a client already gone cannot take it.
        let _ = futures::SinkExt::close(&mut socket).await;
        served
    }

    /// Answer checked messages until the client leaves, or a broken message ends it.
    async fn serve(
        &self,
        socket: &mut tokio_util::codec::Framed<
            guard::Guarded<pgwire::tokio::server::MaybeTls>,
            pgwire::tokio::server::PgWireMessageServerCodec<Arc<handler::Statement>>,
        >,
        mut startup_deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> std::io::Result<()> {
        use futures::StreamExt;
        use pgwire::api::{ClientInfo, PgWireConnectionState};
        use pgwire::messages::PgWireFrontendMessage;
        use pgwire::tokio::server::{process_error, process_message};

        let copy = Arc::new(pgwire::api::NoopHandler);
        loop {
            let starting = matches!(
                socket.state(),
                PgWireConnectionState::AwaitingStartup
                    | PgWireConnectionState::AuthenticationInProgress
            );
            let next = if starting {
                tokio::select! {
                    _ = &mut startup_deadline => None,
                    m = socket.next() => m,
                }
            } else {
                socket.next().await
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(pgwire::error::PgWireError::IoError(e))) => {
                    // A message the guard refused: say why, then close.
                    if let Some(refused) =
                        e.get_ref().and_then(|r| r.downcast_ref::<guard::Refused>())
                    {
                        let _ = process_error(
                            &mut *socket,
                            error::fatal(refused.sqlstate, refused.message.clone()),
                            false,
                        )
                        .await;
                    }
                    break;
                }
                Some(Err(e)) => {
                    let _ =
                        process_error(&mut *socket, error::fatal("08P01", e.to_string()), false)
                            .await;
                    break;
                }
                None => break,
            };
            if matches!(message, PgWireFrontendMessage::Terminate(_)) {
                break;
            }
            let extended = message.is_extended_query();
            if let Err(e) = process_message(
                message,
                &mut *socket,
                self.startup.clone(),
                self.handler.clone(),
                self.handler.clone(),
                copy.clone(),
                self.cancel.clone(),
            )
            .await
            {
                let user = socket.metadata().get(pgwire::api::METADATA_USER).cloned();
                process_error(&mut *socket, error::protocol(e, user.as_deref()), extended).await?;
            }
        }
        Ok(())
    }
}

impl Server {
    pub fn new(engine: Arc<Engine>, config: Config) -> Server {
        Server {
            shared: Arc::new(auth::Shared::new(engine, config.auth)),
            tls: config.tls.map(pgwire::tokio::TlsAcceptor::from),
        }
    }

    /// Serve connections from `listener` until `shutdown` resolves. Connections open then
    /// are closed; their open transactions roll back.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: wait a moment, go on.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let connection = self.connection();
                    let tls = self.tls.clone();
                    connections.spawn(async move {
                        if let Err(e) = connection.run(socket, tls).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        Ok(())
    }

    fn connection(&self) -> Connection {
        Connection {
            handler: Arc::new(handler::Handler::new(Session::new(
                self.shared.engine.clone(),
            ))),
            startup: Arc::new(auth::Startup::new(self.shared.clone())),
            cancel: Arc::new(DefaultCancelHandler::new(self.shared.manager.clone())),
        }
    }
}

/// A TLS configuration from PEM files: a certificate chain and its private key.
pub fn tls_from_pem(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("invalid certificate or key: {e}"))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}
