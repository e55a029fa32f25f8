//! The OpenID provider, as a relying party sees it (the `openidconnect`
//! crate over the project's own hyper client): discovery and its keys,
//! the authorization URL with PKCE, `state` and `nonce`, and the code
//! exchange whose ID token is verified (signature through the provider's
//! JWKS, issuer, audience, expiry, nonce). The keys are fetched again when
//! a token names one the provider did not publish before (key rotation).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenClaims, IdTokenFields, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};

/// Every claim of an ID token beyond the standard ones, by name (the
/// username and groups claims are configurable).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<IdFields, CoreTokenType>;
type Client = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A verified ID token's claims.
pub type Claims = IdTokenClaims<OtherClaims, CoreGenderClaim>;

/// The most of a provider's answer that is read (discovery documents and
/// key sets are a few KiB).
const MAX_ANSWER: usize = 1024 * 1024;

/// How long discovery is trusted before it is fetched again; how soon
/// after a fetch an unknown key may make it fetch again (only the
/// provider's own token endpoint hands us tokens, so nobody else can make
/// us fetch); and how old it may be when an ssh connection asks whether
/// the provider answers.
const METADATA_FOR: Duration = Duration::from_secs(3600);
const REFETCH_AFTER: Duration = Duration::from_secs(1);
const PROBE_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the sign-in provider at {issuer} does not answer: {reason}")]
    Unreachable { issuer: String, reason: String },
    #[error("the sign-in provider at {issuer} refused the sign-in: {reason}")]
    Refused { issuer: String, reason: String },
    #[error("the provider's ID token was refused: {0}")]
    Token(String),
}

/// An HTTP failure, one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The HTTP client the provider is reached with: hyper, TLS checked
/// against the system's CAs and the configured one, no redirects
/// followed, every request bounded in time and size.
#[derive(Clone)]
struct Http {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    wait: Duration,
}

impl Http {
    fn new(extra_ca: Option<&std::path::Path>, wait: Duration) -> Result<Http, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_ca {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| {
                    format!(
                        "oidc.certificate_authority: cannot read {}: {e}",
                        path.display()
                    )
                })?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("oidc.certificate_authority: {}: {e}", path.display()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("oidc: TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(Http { client, wait })
    }

    async fn send(
        self,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| HttpError(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(self.wait, exchange)
            .await
            .map_err(|_| HttpError(format!("no answer within {:?}", self.wait)))?
    }
}

/// An error and its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// A sign-in begun: where to send the browser, and what the callback
/// needs to finish it.
pub struct Begun {
    pub url: url::Url,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

/// The provider kbastion signs people in with.
pub struct Provider {
    issuer: IssuerUrl,
    client_id: ClientId,
    secret: ClientSecret,
    redirect: RedirectUrl,
    http: Http,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, Instant)>>,
}

impl Provider {
    pub fn new(
        config: &crate::config::OidcConfig,
        redirect: &str,
        wait: Duration,
    ) -> Result<Provider, String> {
        Ok(Provider {
            issuer: IssuerUrl::new(config.issuer.clone())
                .map_err(|e| format!("oidc.issuer: {e}"))?,
            client_id: ClientId::new(config.client_id.clone()),
            secret: ClientSecret::new(config.client_secret.clone()),
            redirect: RedirectUrl::new(redirect.to_string())
                .map_err(|e| format!("oidc: the redirect URI {redirect:?}: {e}"))?,
            http: Http::new(config.certificate_authority.as_deref(), wait)?,
            metadata: tokio::sync::Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> ProviderError {
        ProviderError::Unreachable {
            issuer: self.issuer.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The provider's metadata and keys: cached, fetched again once older
    /// than `max_age` (shorter when a token names a key not seen yet).
    async fn client(&self, max_age: Duration) -> Result<Client, ProviderError> {
        let mut cached = self.metadata.lock().await;
        let stale = match &*cached {
            None => true,
            Some((_, fetched)) => fetched.elapsed() > max_age,
        };
        if stale {
            let http = self.http.clone();
            let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &move |r| {
                http.clone().send(r)
            })
            .await
            .map_err(|e| self.unreachable(error_chain(&e)))?;
            *cached = Some((metadata, Instant::now()));
        }
        let Some((metadata, _)) = &*cached else {
            return Err(self.unreachable("no discovery document"));
        };
        Ok(Client::from_provider_metadata(
            metadata.clone(),
            self.client_id.clone(),
            Some(self.secret.clone()),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// A token request's failure: the provider's own refusal, or no
    /// answer.
    fn token_error<E: std::error::Error + 'static>(
        &self,
        error: openidconnect::RequestTokenError<E, StandardErrorResponse<CoreErrorResponseType>>,
    ) -> ProviderError {
        match error {
            openidconnect::RequestTokenError::ServerResponse(answer) => ProviderError::Refused {
                issuer: self.issuer.to_string(),
                reason: answer.to_string(),
            },
            other => self.unreachable(error_chain(&other)),
        }
    }

    /// Whether the provider answers now (its discovery document, fetched
    /// again unless it was just now).
    pub async fn probe(&self) -> Result<(), ProviderError> {
        self.client(PROBE_AFTER).await.map(|_| ())
    }

    /// Where to send a browser to sign in (the authorization code flow
    /// with PKCE S256, a fresh `state` and `nonce`).
    pub async fn begin(&self, groups_scope: bool) -> Result<Begun, ProviderError> {
        let client = self.client(METADATA_FOR).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        if groups_scope {
            request = request.add_scope(Scope::new("groups".into()));
        }
        let (url, state, nonce) = request.url();
        Ok(Begun {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code the provider sent back for tokens, and verifies
    /// the ID token among them; with it, the refresh token if the
    /// provider gave one.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<(Claims, Option<String>), ProviderError> {
        let client = self.client(METADATA_FOR).await?;
        let http = self.http.clone();
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| self.unreachable(format!("it publishes no token endpoint ({e})")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&move |r| http.clone().send(r))
            .await
            .map_err(|e| self.token_error(e))?;
        let nonce = Nonce::new(nonce.to_string());
        let claims = self.verified(&client, &response, &nonce).await?;
        let refresh = response.refresh_token().map(|t| t.secret().clone());
        Ok((claims, refresh))
    }

    /// The verified ID token of a token response (`nonce`: the request's,
    /// or any for a refresh).
    async fn verified<N>(
        &self,
        client: &Client,
        response: &TokenResponse,
        nonce: N,
    ) -> Result<Claims, ProviderError>
    where
        N: openidconnect::NonceVerifier + Copy,
    {
        let token = response
            .extra_fields()
            .id_token()
            .ok_or_else(|| ProviderError::Token("the provider sent no ID token".into()))?;
        match token.claims(&client.id_token_verifier(), nonce) {
            Ok(claims) => Ok(claims.clone()),
            // A key the cached set does not have: the provider may have
            // rotated its keys since; fetch them again, once.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                let client = self.client(REFETCH_AFTER).await?;
                token
                    .claims(&client.id_token_verifier(), nonce)
                    .cloned()
                    .map_err(|e| ProviderError::Token(error_chain(&e)))
            }
            Err(e) => Err(ProviderError::Token(error_chain(&e))),
        }
    }

    /// Asks the provider, with a refresh token, whether the sign-in of
    /// `subject` still holds: its new ID token (the same `sub`), and the
    /// refresh token to use next (the same one when it sends none).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        subject: &str,
    ) -> Result<(Claims, String), ProviderError> {
        let client = self.client(METADATA_FOR).await?;
        let http = self.http.clone();
        let token = openidconnect::RefreshToken::new(refresh_token.to_string());
        let response = client
            .exchange_refresh_token(&token)
            .map_err(|e| self.unreachable(format!("it publishes no token endpoint ({e})")))?
            .request_async(&move |r| http.clone().send(r))
            .await
            .map_err(|e| self.token_error(e))?;
        // A refreshed ID token carries no nonce (OpenID Connect Core 12.2).
        let any_nonce = |_: Option<&Nonce>| Ok::<(), String>(());
        let claims = self.verified(&client, &response, &any_nonce).await?;
        if claims.subject().as_str() != subject {
            return Err(ProviderError::Token(format!(
                "the refreshed ID token names another subject ({})",
                claims.subject().as_str()
            )));
        }
        let next = response
            .refresh_token()
            .map(|t| t.secret().clone())
            .unwrap_or_else(|| refresh_token.to_string());
        Ok((claims, next))
    }
}
