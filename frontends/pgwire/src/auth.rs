//! Startup: who may connect, and to which database.
//!
//! The password is the server's access token, whatever the user name. It is checked by
//! SCRAM-SHA-256 (the default: the token never crosses the wire) or sent as a cleartext
//! password (for clients without SCRAM; use it over TLS). `--no-auth` trusts everyone who
//! can reach the port.
//!
//! Before authenticating, the startup message's database is checked: connecting to a
//! database that does not exist is a FATAL 3D000, as in PostgreSQL. `default` is created
//! on first use.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata, AuthSource,
    DefaultServerParameterProvider, LoginInfo, Password, ServerParameterProvider, StartupHandler,
};
use pgwire::api::{
    ClientInfo, ConnectionHandle, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use strata_engine::Engine;

use crate::error::fatal;

/// SCRAM's PBKDF2 rounds, as PostgreSQL's default.
const SCRAM_ITERATIONS: usize = 4096;

/// How clients prove they may connect.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Anyone who can reach the port (trusted machines only).
    Trust,
    /// The access token, proven by SCRAM-SHA-256.
    Scram(String),
    /// The access token, sent as a cleartext password.
    Password(String),
}

/// What every connection's startup shares.
pub(crate) struct Shared {
    pub engine: Arc<Engine>,
    pub auth: Auth,
    pub manager: Arc<ConnectionManager>,
    pub params: Params,
    pids: Arc<RandomPidSecretKeyGenerator>,
    /// The token salted and hashed once, for SCRAM.
    scram: Option<Arc<TokenSource>>,
}

impl Shared {
    pub fn new(engine: Arc<Engine>, auth: Auth) -> Shared {
        let scram = match &auth {
            Auth::Scram(token) => {
                let salt = uuid::Uuid::new_v4().into_bytes().to_vec();
                let hashed = gen_salted_password(token, &salt, SCRAM_ITERATIONS);
                Some(Arc::new(TokenSource {
                    password: Password::new(Some(salt), hashed),
                }))
            }
            _ => None,
        };
        let mut params = DefaultServerParameterProvider::default();
        params.server_version = format!("15.0 (Strata {})", env!("CARGO_PKG_VERSION"));
        params.scram_iterations = SCRAM_ITERATIONS;
        Shared {
            engine,
            auth,
            manager: Arc::new(ConnectionManager::new()),
            params: Params(Arc::new(params)),
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
            scram,
        }
    }
}

/// The server parameters sent after authentication.
#[derive(Clone)]
pub(crate) struct Params(Arc<DefaultServerParameterProvider>);

impl ServerParameterProvider for Params {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        self.0.server_parameters(client)
    }
}

/// The access token as the password of every user.
#[derive(Debug)]
pub(crate) struct TokenSource {
    password: Password,
}

#[async_trait]
impl AuthSource for TokenSource {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(self.password.clone())
    }
}

/// One connection's startup handler.
pub(crate) struct Startup {
    shared: Arc<Shared>,
    mode: Mode,
}

enum Mode {
    Trust,
    Scram(SASLAuthStartupHandler<Params>),
    Password(CleartextPasswordAuthStartupHandler<TokenSource, Params>),
}

impl Startup {
    pub fn new(shared: Arc<Shared>) -> Startup {
        let mode = match &shared.auth {
            Auth::Trust => Mode::Trust,
            Auth::Scram(_) => {
                let source = shared
                    .scram
                    .clone()
                    .map(|s| s as Arc<dyn AuthSource>)
                    .unwrap_or_else(|| {
                        Arc::new(TokenSource {
                            password: Password::new(None, Vec::new()),
                        })
                    });
                let mut scram = ScramAuth::new(source);
                scram.set_iterations(SCRAM_ITERATIONS);
                Mode::Scram(
                    SASLAuthStartupHandler::new(Arc::new(shared.params.clone()))
                        .with_scram(scram)
                        .with_pid_secret_key_generator(shared.pids.clone())
                        .with_connection_manager(shared.manager.clone()),
                )
            }
            Auth::Password(token) => Mode::Password(
                CleartextPasswordAuthStartupHandler::new(
                    TokenSource {
                        password: Password::new(None, token.as_bytes().to_vec()),
                    },
                    shared.params.clone(),
                )
                .with_pid_secret_key_generator(shared.pids.clone())
                .with_connection_manager(shared.manager.clone()),
            ),
        };
        Startup { shared, mode }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            let db = crate::startup_database(|k| startup.parameters.get(k));
            if db != "default" && !self.shared.engine.exists(&db).await.unwrap_or(false) {
                return Err(fatal("3D000", format!("database \"{db}\" does not exist")));
            }
        }
        match &self.mode {
            Mode::Scram(h) => h.on_startup(client, message).await,
            Mode::Password(h) => h.on_startup(client, message).await,
            Mode::Trust => {
                if let PgWireFrontendMessage::Startup(startup) = &message {
                    protocol_negotiation(client, startup).await?;
                    save_startup_parameters_to_metadata(client, startup);
                    let (pid, key) = self.shared.pids.generate(client);
                    client.set_pid_and_secret_key(pid, key.clone());
                    let (handle, guard) = self.shared.manager.register(pid, key);
                    client
                        .session_extensions()
                        .insert::<Arc<ConnectionHandle>>(handle);
                    client.session_extensions().insert(guard);
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    finish_authentication(client, &self.shared.params).await?;
                }
                Ok(())
            }
        }
    }
}
