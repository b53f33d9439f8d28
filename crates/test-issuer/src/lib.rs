//! An OIDC issuer on loopback for custody's tests and benchmarks.
//!
//! It serves `/.well-known/openid-configuration` and `/jwks` like a CI provider does, signs
//! tokens with RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA) keys and any claims, and can
//! misbehave the ways a real issuer does: rotate or retire keys, serve garbage, go down and
//! come back on the same address. It also forges the tokens an attacker would: `alg: none`,
//! and HS256 signed with the issuer's public key.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The audience tokens carry unless a test says otherwise.
pub const AUDIENCE: &str = "custody";

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The public key as PEM (RSA only): what an attacker would use as an HMAC secret.
    public_pem: Option<String>,
}

impl Key {
    /// A fresh RSA-2048 key.
    pub fn rsa(kid: &str) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA keygen");
        let public = private.to_public_key();
        let der = private
            .to_pkcs1_der()
            .expect("PKCS#1 DER of a generated key");
        let pem = {
            use rsa::pkcs8::EncodePublicKey;
            public
                .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
                .expect("PEM of a generated key")
        };
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64(&public.n().to_bytes_be()),
                "e": b64(&public.e().to_bytes_be()),
            }),
            public_pem: Some(pem),
        }
    }

    /// A fresh P-256 key.
    pub fn ec(kid: &str) -> Self {
        use p256::pkcs8::EncodePrivateKey;
        let secret = loop {
            if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
                break k;
            }
        };
        let point = secret.verifying_key().to_encoded_point(false);
        let der = secret
            .to_pkcs8_der()
            .expect("PKCS#8 DER of a generated key");
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({
                "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
                "x": b64(point.x().expect("uncompressed point")),
                "y": b64(point.y().expect("uncompressed point")),
            }),
            public_pem: None,
        }
    }

    /// A fresh Ed25519 key.
    pub fn ed25519(kid: &str) -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let secret = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let der = secret
            .to_pkcs8_der()
            .expect("PKCS#8 DER of a generated key");
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            jwk: json!({
                "kty": "OKP", "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "kid": kid,
                "x": b64(secret.verifying_key().as_bytes()),
            }),
            public_pem: None,
        }
    }

    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `claims` with this key, naming it in `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing a token")
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How the issuer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Discovery and JWKS as a real issuer serves them.
    Normal,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 503 for everything.
    Failing,
}

struct Shared {
    issuer: String,
    keys: Mutex<Vec<Key>>,
    mode: Mutex<Mode>,
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
    /// Who signs in at `/authorize` (its `sub` and extra claims).
    person: Mutex<(String, Value)>,
    /// Authorization codes not yet exchanged.
    codes: Mutex<std::collections::HashMap<String, Grant>>,
}

/// What an authorization code stands for.
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
}

/// A running issuer.
pub struct TestIssuer {
    /// The issuer URL: the `iss` of its tokens.
    pub url: String,
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl TestIssuer {
    /// An issuer publishing one RSA key (`rsa-1`), one P-256 key (`ec-1`) and one Ed25519 key
    /// (`ed-1`).
    pub async fn start() -> Self {
        Self::with_keys(vec![
            Key::rsa("rsa-1"),
            Key::ec("ec-1"),
            Key::ed25519("ed-1"),
        ])
        .await
    }

    pub async fn with_keys(keys: Vec<Key>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the test issuer");
        let addr = listener.local_addr().expect("local address");
        let url = format!("http://{addr}");
        let shared = Arc::new(Shared {
            issuer: url.clone(),
            keys: Mutex::new(keys),
            mode: Mutex::new(Mode::Normal),
            discovery_fetches: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
            person: Mutex::new(("alice".into(), json!({}))),
            codes: Mutex::new(std::collections::HashMap::new()),
        });
        let server = serve(listener, shared.clone());
        Self {
            url,
            addr,
            shared,
            server: Mutex::new(Some(server)),
        }
    }

    /// Stops listening: fetches fail with "connection refused".
    pub fn stop(&self) {
        if let Some(task) = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&self) {
        self.stop();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(serve(listener, self.shared.clone()));
    }

    pub fn set_mode(&self, mode: Mode) {
        *self
            .shared
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// Publishes `key` too.
    pub fn publish(&self, key: Key) {
        self.keys().push(key);
    }

    /// Stops publishing the key `kid`.
    pub fn retire(&self, kid: &str) {
        self.keys().retain(|k| k.kid != kid);
    }

    /// The published key `kid`.
    pub fn key(&self, kid: &str) -> Key {
        self.keys()
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
            .unwrap_or_else(|| panic!("no key {kid}"))
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Vec<Key>> {
        self.shared
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Who signs in at `/authorize` from now on: the ID token's `sub` and extra claims.
    pub fn sign_in_as(&self, sub: &str, extra: Value) {
        *self
            .shared
            .person
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (sub.to_string(), extra);
    }

    /// How often the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Claims of a valid token: this issuer, [`AUDIENCE`], subject `sub`, issued now, expiring
    /// in five minutes; `extra` adds or replaces claims (`null` removes one).
    pub fn claims(&self, sub: &str, extra: &Value) -> Value {
        let now = now();
        let mut c = json!({
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": b64(&rand::random::<[u8; 12]>()),
        });
        if let (Some(map), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    map.remove(k);
                } else {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        c
    }

    /// A token signed with the published key `kid`.
    pub fn token(&self, kid: &str, claims: &Value) -> String {
        self.key(kid).sign(claims)
    }

    /// A token with `alg: none` and no signature.
    pub fn forge_none(&self, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"});
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    /// A token "signed" with HS256 using the RSA key `kid`'s public key as the secret: the
    /// classic algorithm-confusion forgery.
    pub fn forge_hs256(&self, kid: &str, claims: &Value) -> String {
        let key = self.key(kid);
        let pem = key.public_pem.expect("an RSA key");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(pem.as_bytes()))
            .expect("signing a token")
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", axum::routing::post(token))
        .with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn fault(shared: &Shared) -> Option<Response> {
    match *shared.mode.lock().unwrap_or_else(PoisonError::into_inner) {
        Mode::Normal => None,
        Mode::Garbage => Some((StatusCode::OK, "<html>not json</html>").into_response()),
        Mode::Failing => Some(StatusCode::SERVICE_UNAVAILABLE.into_response()),
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = fault(&shared) {
        return r;
    }
    axum::Json(json!({
        "issuer": shared.issuer,
        "jwks_uri": format!("{}/jwks", shared.issuer),
        "subject_types_supported": ["public", "pairwise"],
        "authorization_endpoint": format!("{}/authorize", shared.issuer),
        "token_endpoint": format!("{}/token", shared.issuer),
        "response_types_supported": ["code", "id_token"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = fault(&shared) {
        return r;
    }
    let keys: Vec<Value> = shared
        .keys
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|k| k.jwk.clone())
        .collect();
    axum::Json(json!({ "keys": keys })).into_response()
}

type Form = std::collections::HashMap<String, String>;

/// The authorization endpoint of the code flow with PKCE (`S256` only): the person of
/// [`TestIssuer::sign_in_as`] consents at once, and the browser is sent back with a code.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<Form>,
) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code" || get("code_challenge_method") != "S256" {
        return (
            StatusCode::BAD_REQUEST,
            "response_type=code and code_challenge_method=S256 are required",
        )
            .into_response();
    }
    let code = b64(&rand::random::<[u8; 16]>());
    shared
        .codes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            code.clone(),
            Grant {
                client_id: get("client_id"),
                redirect_uri: get("redirect_uri"),
                challenge: get("code_challenge"),
                nonce: q.get("nonce").cloned(),
            },
        );
    let to = format!("{}?code={code}&state={}", get("redirect_uri"), get("state"));
    (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, to)]).into_response()
}

/// The token endpoint: a code, once, with the verifier of its challenge, for an ID token.
async fn token(State(shared): State<Arc<Shared>>, axum::Form(f): axum::Form<Form>) -> Response {
    use sha2::Digest as _;
    let refuse = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return refuse("grant_type must be authorization_code");
    }
    let Some(grant) = shared
        .codes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&get("code"))
    else {
        return refuse("unknown or used code");
    };
    if grant.client_id != get("client_id") || grant.redirect_uri != get("redirect_uri") {
        return refuse("client_id or redirect_uri differ from the authorization request's");
    }
    if b64(&sha2::Sha256::digest(get("code_verifier").as_bytes())) != grant.challenge {
        return refuse("the code_verifier does not match the code_challenge");
    }
    let (sub, extra) = shared
        .person
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let now = now();
    let mut claims = json!({
        "iss": shared.issuer, "aud": grant.client_id, "sub": sub,
        "iat": now, "nbf": now, "exp": now + 300,
    });
    if let Some(n) = grant.nonce {
        claims["nonce"] = json!(n);
    }
    if let (Some(map), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        map.extend(extra.clone());
    }
    let key = shared
        .keys
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .first()
        .cloned()
        .expect("a published key");
    axum::Json(json!({
        "access_token": b64(&rand::random::<[u8; 16]>()),
        "token_type": "Bearer",
        "id_token": key.sign(&claims),
    }))
    .into_response()
}
