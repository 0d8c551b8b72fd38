//! The CLI's side of the HTTP API: `--addr`/`WEIR_ADDR`, the token, and
//! errors that say what to do when the daemon is not there.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// Flags of the commands that talk to a daemon.
#[derive(clap::Args)]
pub(crate) struct ClientArgs {
    /// The daemon's address [default: http://LISTEN of weir.toml, else http://127.0.0.1:8765].
    #[arg(long, env = "WEIR_ADDR", global = true)]
    pub(crate) addr: Option<String>,
    /// The daemon's data folder, where its token is, unless WEIR_TOKEN is set [default: .weir].
    #[arg(long, env = "WEIR_DATA", global = true)]
    pub(crate) data: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) config: crate::config::ConfigArgs,
}

/// A client of one daemon.
pub(crate) struct Client {
    http: reqwest::Client,
    addr: String,
    token: String,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let file = crate::config::Layers::read(&args.config)?.file;
        let data = (args.data.clone())
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from(".weir"));
        let addr = (args.addr.clone())
            .or_else(|| file.listen.map(|listen| format!("http://{listen}")))
            .unwrap_or_else(|| "http://127.0.0.1:8765".to_owned());
        let token = match std::env::var("WEIR_TOKEN") {
            Ok(token) if !token.is_empty() => token,
            _ => std::fs::read_to_string(data.join("token"))
                .map(|t| t.trim().to_owned())
                .unwrap_or_default(),
        };
        Ok(Client {
            http: reqwest::Client::builder().build()?,
            addr: addr.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// `GET /api/v1{path}`, read as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path, None::<&()>).await
    }

    /// `POST /api/v1{path}` with `body` as JSON (none when `None`), the
    /// answer read as `T`.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// Sends a request to `/api/v1{path}` and reads the answer as `T`, or
    /// fails with the API's error message.
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let url = format!("{}/api/v1{path}", self.addr);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            let why = if e.is_connect() {
                "connection refused"
            } else {
                "no answer"
            };
            anyhow::anyhow!(
                "cannot reach weir at {} ({why}): is 'weir serve' running?",
                self.addr
            )
        })?;
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_slice::<weir_api::Error>(&bytes).map_or_else(
                |_| "the daemon refused the request".to_owned(),
                |e| e.error.message,
            );
            anyhow::bail!("{message} (HTTP {})", status.as_u16())
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "weir at {} answered {path} with what this weir cannot read ({e}): \
                 are the CLI and the daemon the same version?",
                self.addr
            )
        })
    }
}
