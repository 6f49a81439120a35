//! The one way the operator talks to GitHub: octocrab carries the requests and the
//! credentials (a token, or a GitHub App whose installation is found per repository and whose
//! installation tokens octocrab caches and renews before they expire), and every call is
//! counted, bounded in time and size, and answered with its headers so callers can honour
//! rate limits.
//!
//! Each installation has ONE octocrab client, shared behind an `Arc` and never cloned:
//! cloning an `Octocrab` copies its token cache into a new, empty-handed one, so a clone per
//! call minted a fresh installation token for nearly every call (41 token requests for 43
//! calls); shared, a token is minted once per installation until it nears expiry.
//!
//! The token or the App key comes from a [`Credential`] that follows its file: when it
//! changes, the clients are built again (a new key signs new JWTs, so the installation clients
//! and their tokens minted with the old key are dropped too).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use serde::Deserialize;

use crate::credential::Credential;
use crate::metrics::Metrics;
use crate::scm::{Answer, Me, Provider, ScmError, TIMEOUT};
use crate::sync::lock;

/// How long a repository's installation is remembered before it is looked up again (an App
/// can be uninstalled from one repository and installed on another).
const INSTALLATION_TTL: Duration = Duration::from_secs(3600);

/// Who the operator is on GitHub.
#[derive(Clone)]
pub enum Credentials {
    /// A token (personal, or an App's installation token handed in from outside).
    Token(Credential),
    /// A GitHub App: its id and its private key (PEM).
    App { id: u64, private_key: Credential },
}

impl Credentials {
    fn credential(&self) -> &Credential {
        match self {
            Credentials::Token(token) => token,
            Credentials::App { private_key, .. } => private_key,
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(..)"),
            Credentials::App { id, .. } => write!(f, "App {{ id: {id} }}"),
        }
    }
}

/// Where GitHub is and who the operator is there.
#[derive(Clone, Debug)]
pub struct GitHubConfig {
    /// API base URL, e.g. `https://api.github.com` or `https://ghe.example.com/api/v3`.
    pub api_url: String,
    pub credentials: Credentials,
}

/// A GitHub client shared by the poster, the comment writer, the webhook's confirmation and
/// the resync; it is GitHub's [`crate::scm::Forge`].
pub struct GitHub {
    config: GitHubConfig,
    /// The App's id, with an App.
    app: Option<u64>,
    /// The clients of the credential's last working version.
    session: Mutex<Current>,
    /// With an App: each repository's installation, and when it was looked up.
    installations: Mutex<HashMap<String, (InstallationId, Instant)>>,
    metrics: Arc<Metrics>,
    /// The check runs written, for the poster (which alone takes it, so it never waits).
    pub(super) runs: tokio::sync::Mutex<super::checks::Runs>,
    /// The deployments created, for the poster likewise.
    pub(super) deployments: tokio::sync::Mutex<super::deployments::Known>,
}

/// The clients in use, and the credential's version last looked at (newer than theirs when
/// that version did not work: it is not tried again).
struct Current {
    seen: u64,
    session: Arc<Session>,
}

/// What is built from one version of the credential, and dropped with it.
struct Session {
    /// Authenticated as the token, or as the App itself (JWT) with an App.
    root: Arc<Octocrab>,
    /// Who the operator is, once asked (a new token may be someone else's).
    me: tokio::sync::OnceCell<Me>,
    /// With an App: one client per installation, whose token cache every call shares.
    clients: Mutex<HashMap<InstallationId, Arc<Octocrab>>>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct User {
    id: u64,
}

impl GitHub {
    pub fn new(config: &GitHubConfig, metrics: Arc<Metrics>) -> anyhow::Result<Arc<GitHub>> {
        let credential = config.credentials.credential().versioned();
        let seen = credential.version;
        let session = Arc::new(Session::new(config, &credential.value)?);
        let app = match config.credentials {
            Credentials::App { id, .. } => Some(id),
            Credentials::Token(_) => None,
        };
        Ok(Arc::new(GitHub {
            config: config.clone(),
            app,
            session: Mutex::new(Current { seen, session }),
            installations: Mutex::new(HashMap::new()),
            metrics,
            runs: Default::default(),
            deployments: Default::default(),
        }))
    }

    /// The clients of the credential as it is now: built again when it changed. A new value
    /// that does not work (not a key) is warned about once and the last clients are kept.
    fn session(&self) -> Arc<Session> {
        let credential = self.config.credentials.credential().versioned();
        let version = credential.version;
        {
            let current = lock(&self.session);
            if current.seen >= version {
                return Arc::clone(&current.session);
            }
        }
        // Built outside the lock: other callers keep the last clients meanwhile.
        let fresh = Session::new(&self.config, &credential.value);
        let mut current = lock(&self.session);
        // Another caller may have been first, with this version or a newer one.
        if version > current.seen {
            current.seen = version;
            match fresh {
                Ok(fresh) => {
                    tracing::info!("GitHub credentials changed: clients built again");
                    current.session = Arc::new(fresh);
                }
                Err(e) => tracing::warn!(
                    error = %format!("{e:#}"),
                    "the new GitHub credentials do not work; keeping the last ones"
                ),
            }
        }
        Arc::clone(&current.session)
    }

    /// Whether the operator is a GitHub App (and so may write check runs).
    pub fn is_app(&self) -> bool {
        self.app.is_some()
    }

    /// The App's id, with an App.
    pub fn app_id(&self) -> Option<u64> {
        self.app
    }

    /// Who the operator is: the App, or the token's user (`GET /user`, asked once).
    pub async fn me(&self) -> Result<Me, ScmError> {
        if let Some(id) = self.app {
            return Ok(Me::App(id));
        }
        let what = "the token's user (GET /user)";
        let session = self.session();
        session
            .me
            .get_or_try_init(|| async {
                let answer = tokio::time::timeout(
                    TIMEOUT,
                    self.send(&session.root, Method::GET, "/user", "user", None, what),
                )
                .await
                .map_err(|_| {
                    self.metrics.scm_request(Provider::Github, "user", 0);
                    ScmError::Timeout {
                        provider: Provider::Github,
                        what: what.to_string(),
                    }
                })??;
                answer.json::<User>(what).map(|u| Me::User(u.id))
            })
            .await
            .copied()
    }

    /// One call about `repository` (`owner/name`): `path` below the API URL, `endpoint` the
    /// name it is counted under. Every answer GitHub gives is `Ok`; see [`Answer::ok`].
    pub async fn call(
        &self,
        repository: &str,
        method: Method,
        path: &str,
        endpoint: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ScmError> {
        let what = format!("{endpoint} of {repository}");
        let answer = tokio::time::timeout(TIMEOUT, async {
            let crab = self.client_for(repository).await?;
            let answer = self
                .send(&crab, method, path, endpoint, body, &what)
                .await?;
            if answer.status == StatusCode::NOT_FOUND && self.is_app() {
                // The App may have been uninstalled from this repository: look it up again.
                lock(&self.installations).remove(repository);
            }
            Ok(answer)
        })
        .await;
        answer.unwrap_or_else(|_| {
            self.metrics.scm_request(Provider::Github, endpoint, 0);
            Err(ScmError::Timeout {
                provider: Provider::Github,
                what,
            })
        })
    }

    /// The client that acts for `repository`: the token's, or its installation's (one per
    /// installation, shared, so its cached token is too).
    async fn client_for(&self, repository: &str) -> Result<Arc<Octocrab>, ScmError> {
        let session = self.session();
        if !self.is_app() {
            return Ok(Arc::clone(&session.root));
        }
        let known = lock(&self.installations)
            .get(repository)
            .filter(|(_, since)| since.elapsed() < INSTALLATION_TTL)
            .map(|(id, _)| *id);
        let id = match known {
            Some(id) => id,
            None => {
                let what = format!("the App installation of {repository}");
                let path = format!("/repos/{repository}/installation");
                let installation: Installation = self
                    .send(
                        &session.root,
                        Method::GET,
                        &path,
                        "installation",
                        None,
                        &what,
                    )
                    .await?
                    .json(&what)?;
                let id = InstallationId(installation.id);
                let mut installations = lock(&self.installations);
                // Bounded: one entry per repository with previews; a flood of names is not
                // kept.
                if installations.len() > 10_000 {
                    installations.clear();
                }
                installations.insert(repository.to_string(), (id, Instant::now()));
                id
            }
        };
        let mut clients = lock(&session.clients);
        if let Some(crab) = clients.get(&id) {
            return Ok(Arc::clone(crab));
        }
        let crab = session
            .root
            .installation(id)
            .map_err(|e| ScmError::Unreachable {
                provider: Provider::Github,
                what: format!("the App installation {} of {repository}", id.0),
                message: e.to_string(),
            })?;
        // Bounded like the repositories: an App has few installations, so this is a guard.
        if clients.len() > 1_000 {
            clients.clear();
        }
        let crab = Arc::new(crab);
        clients.insert(id, Arc::clone(&crab));
        Ok(crab)
    }

    async fn send(
        &self,
        crab: &Octocrab,
        method: Method,
        path: &str,
        endpoint: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<Answer, ScmError> {
        let unreachable = |e: octocrab::Error| ScmError::Unreachable {
            provider: Provider::Github,
            what: what.to_string(),
            message: e.to_string(),
        };
        let response = match method {
            Method::GET => crab._get(path).await,
            Method::POST => crab._post(path, body).await,
            Method::PATCH => crab._patch(path, body).await,
            Method::PUT => crab._put(path, body).await,
            Method::DELETE => crab._delete(path, body).await,
            other => {
                return Err(ScmError::Malformed {
                    provider: Provider::Github,
                    what: what.to_string(),
                    message: format!("method {other} is not used"),
                });
            }
        }
        .map_err(|e| {
            self.metrics.scm_request(Provider::Github, endpoint, 0);
            unreachable(e)
        })?;
        Answer::read(
            Provider::Github,
            endpoint,
            response,
            "x-ratelimit-remaining",
            &self.metrics,
        )
        .await
        .map_err(|message| ScmError::Unreachable {
            provider: Provider::Github,
            what: what.to_string(),
            message,
        })
    }
}

impl Session {
    /// The root client of `secret` (a token, or the App's key), with no installation
    /// clients yet.
    fn new(config: &GitHubConfig, secret: &str) -> anyhow::Result<Session> {
        let builder = Octocrab::builder()
            .base_uri(config.api_url.trim_end_matches('/'))?
            .set_connect_timeout(Some(Duration::from_secs(5)))
            .set_read_timeout(Some(TIMEOUT))
            .add_header(
                http::header::ACCEPT,
                "application/vnd.github+json".to_string(),
            )
            .add_header(
                http::HeaderName::from_static("x-github-api-version"),
                "2022-11-28".to_string(),
            );
        let root = match &config.credentials {
            Credentials::Token(_) => builder.personal_token(secret.to_string()),
            Credentials::App { id, .. } => {
                let key = octocrab::EncodingKey::from_rsa_pem(secret.as_bytes()).map_err(|e| {
                    anyhow::anyhow!("the GitHub App private key is not an RSA key in PEM: {e}")
                })?;
                builder.app(AppId(*id), key)
            }
        }
        .build()?;
        Ok(Session {
            root: Arc::new(root),
            me: tokio::sync::OnceCell::new(),
            clients: Mutex::new(HashMap::new()),
        })
    }
}
