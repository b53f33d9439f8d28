//! `/ui/`: the web page. Signing in (a bearer token, or the organisation's OIDC provider with
//! PKCE) makes a session cookie; every page then acts with the session's token through the
//! same functions the API runs, so it sees, refuses and records exactly what the API would.
//! Every response carries a strict Content-Security-Policy and is never cached.

mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use super::App;
use crate::identity::Principal;
use crate::ui::{self, Session, Sessions, oidc::Provider, pages::Viewer};

/// What the web page keeps.
pub struct UiState {
    pub sessions: Sessions,
    pub provider: Option<Provider>,
    pub exports: Arc<crate::export::Exports>,
    /// Whether cookies are marked `Secure` (the gateway is reached over https).
    pub secure: bool,
}

/// The page's routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/auth/oidc", get(oidc_begin))
        .route("/ui/auth/callback", get(oidc_callback))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/{id}", get(pages::timeline))
        .route("/ui/entries", get(pages::entries))
        .route("/ui/entries/{index}", get(pages::entry))
        .route("/ui/approvals", get(pages::approvals))
        .route("/ui/approvals/{id}/{verb}", post(pages::decide))
        .route("/ui/health", get(pages::health))
        // Forms carry a token and a reason: nothing near axum's 2 MB default.
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .layer(axum::middleware::map_response(harden))
}

/// The headers every page and asset carries.
async fn harden(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ui::CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn state(app: &App) -> &UiState {
    app.ui
        .as_deref()
        .unwrap_or_else(|| unreachable!("the /ui routes are mounted only with the page enabled"))
}

/// A 303 to `to`.
fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// A path under `/ui/` to come back to, or the runs page: never another site.
fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => "/ui/runs".to_string(),
    }
}

/// A cookie's name on the wire: over https with the `__Host-` prefix, which a browser accepts
/// only from this host, over https, for the whole site (no sibling subdomain can set or shadow
/// it).
fn wire_name(ui: &UiState, name: &str) -> String {
    if ui.secure {
        format!("__Host-{name}")
    } else {
        name.to_string()
    }
}

fn cookie_of(ui: &UiState, headers: &HeaderMap, name: &str) -> Option<String> {
    cookie(headers, &wire_name(ui, name))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(resp: &mut Response, ui: &UiState, name: &str, value: &str, max_age: u64) {
    let name = wire_name(ui, name);
    // `__Host-` cookies must be Secure with Path=/; over plain http (loopback, tests) the
    // cookie stays on /ui.
    let attrs = if ui.secure {
        "Path=/; Secure"
    } else {
        "Path=/ui"
    };
    let c = format!("{name}={value}; {attrs}; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Whether a POST comes from this site's own pages: a browser names the page's origin in
/// `Origin`, which must be the `Host` the request was sent to. (A request without `Origin`
/// is not a browser's form; the session's form token still guards every decision.)
fn same_origin(app: &App, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    // Behind a proxy that rewrites `Host`, the public URL is the page's origin.
    if let Some(public) = app.public_url.as_deref()
        && let Ok(u) = url::Url::parse(public)
        && u.origin()
            .ascii_serialization()
            .eq_ignore_ascii_case(origin)
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// The page for a form posted from another site.
fn cross_site() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(
            ui::pages::error(
                None,
                403,
                "this form was posted from another site (its Origin is not this gateway); sign in and decide on the gateway's own pages",
            )
            .into_string(),
        ),
    )
        .into_response()
}

/// Headers that present `token` as the API expects it.
fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        h.insert(header::AUTHORIZATION, v);
    }
    h
}

/// The page's session and who it acts as, or where to send the browser instead (the sign-in
/// page when there is no session or its token is no longer accepted).
pub(super) async fn signed_in(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
    here: &str,
) -> Result<(Session, Arc<Principal>), Response> {
    let ui = state(app);
    let to_login = |why: Option<&str>| {
        let mut to = format!("/ui/login?next={}", ui::pages::enc(here));
        if let Some(w) = why {
            to.push_str(&format!("&why={w}"));
        }
        see_other(&to)
    };
    let Some(c) = cookie_of(ui, headers, ui::COOKIE) else {
        return Err(to_login(None));
    };
    let Some(session) = ui.sessions.get(&c) else {
        return Err(to_login(Some("expired")));
    };
    match super::approvals::who(app, &bearer(&session.token), &Method::GET, peer, "web page").await
    {
        Ok(p) => Ok((session, p)),
        Err(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
            ui.sessions.end(&c);
            Err(to_login(Some("expired")))
        }
        Err(resp) => Err(pages::from_api(None, resp).await),
    }
}

async fn home() -> Response {
    see_other("/ui/runs")
}

async fn asset(Path(name): Path<String>) -> Response {
    match ui::assets::find(&name) {
        Some((kind, body)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    why: Option<String>,
}

fn login_html(app: &App, status: StatusCode, error: Option<&str>, next: &str) -> Response {
    let issuer = state(app).provider.as_ref().map(Provider::issuer);
    (
        status,
        Html(ui::pages::login(issuer, error, next).into_string()),
    )
        .into_response()
}

async fn login_page(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Response {
    let why = match q.why.as_deref() {
        Some("expired") => Some(
            "Your sign-in ended (it expired, or its token is no longer accepted). Sign in again.",
        ),
        Some("signed-out") => Some("You signed out."),
        _ => None,
    };
    login_html(&app, StatusCode::OK, why, &local_next(q.next.as_deref()))
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Signs in with a token: accepted only if the API would accept it (and not as anonymous).
async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !same_origin(&app, &headers) {
        return cross_site();
    }
    let next = local_next(f.next.as_deref());
    let token = f.token.trim();
    match super::approvals::who(&app, &bearer(token), &Method::POST, peer, "web page").await {
        Ok(p) => start_session(&app, token, &p, &next),
        Err(resp) => {
            let status = resp.status();
            let why = pages::api_error(resp).await;
            login_html(&app, status, Some(&format!("Not signed in: {why}")), &next)
        }
    }
}

fn start_session(app: &App, token: &str, who: &Principal, next: &str) -> Response {
    let ui = state(app);
    let (cookie, _) = ui.sessions.create(token, &who.binding);
    tracing::info!(who = %who.name, "signed in to the web page");
    let mut resp = see_other(next);
    set_cookie(
        &mut resp,
        ui,
        ui::COOKIE,
        &cookie,
        ui.sessions.ttl().as_secs(),
    );
    resp
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let ui = state(&app);
    if !same_origin(&app, &headers) {
        return cross_site();
    }
    if let Some(c) = cookie_of(ui, &headers, ui::COOKIE)
        && ui.sessions.get(&c).is_some_and(|s| s.csrf == f.csrf)
    {
        ui.sessions.end(&c);
    }
    let mut resp = see_other("/ui/login?why=signed-out");
    set_cookie(&mut resp, ui, ui::COOKIE, "", 0);
    resp
}

/// The cookie binding a sign-in with the provider to this browser.
const LOGIN_COOKIE: &str = "custody_ui_login";

/// Starts a sign-in with the OIDC provider: PKCE verifier, state and nonce, then off to it.
async fn oidc_begin(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Response {
    let ui = state(&app);
    let next = local_next(q.next.as_deref());
    let Some(provider) = &ui.provider else {
        return login_html(
            &app,
            StatusCode::NOT_FOUND,
            Some("Sign-in with an OIDC provider is not configured ([ui.oidc])."),
            &next,
        );
    };
    let (verifier, nonce, browser) = (
        ui::sessions::random(),
        ui::sessions::random(),
        ui::sessions::random(),
    );
    let state_value = ui.sessions.begin(
        verifier.clone(),
        nonce.clone(),
        next.clone(),
        browser.clone(),
    );
    match provider
        .authorize_url(&state_value, &nonce, &verifier)
        .await
    {
        Ok(url) => {
            let mut resp = see_other(&url);
            set_cookie(&mut resp, ui, LOGIN_COOKIE, &browser, 600);
            resp
        }
        Err(e) => {
            tracing::warn!("sign-in with the OIDC provider could not start: {e}");
            login_html(
                &app,
                StatusCode::BAD_GATEWAY,
                Some(&format!("The OIDC provider cannot be used: {e}")),
                &next,
            )
        }
    }
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back here with a code: exchange it (with the verifier), check
/// the ID token like any other token and its nonce, and start a session.
async fn oidc_callback(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let ui = state(&app);
    let fail = |status: StatusCode, why: String| {
        tracing::warn!("a sign-in with the OIDC provider failed: {why}");
        let mut resp = login_html(
            &app,
            status,
            Some(&format!("Not signed in: {why}")),
            "/ui/runs",
        );
        set_cookie(&mut resp, ui, LOGIN_COOKIE, "", 0);
        resp
    };
    let Some(provider) = &ui.provider else {
        return fail(
            StatusCode::NOT_FOUND,
            "sign-in with an OIDC provider is not configured".into(),
        );
    };
    if let Some(e) = q.error {
        // The provider's words are not shown (anyone can make a link with an `error`): a
        // fixed sentence, and the words logged only for a sign-in this gateway started.
        let ours = q
            .state
            .as_deref()
            .and_then(|st| ui.sessions.finish(st))
            .is_some();
        if ours {
            let said: String = format!("{e}: {}", q.error_description.unwrap_or_default())
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect();
            tracing::warn!(provider = %provider.issuer(), "the OIDC provider did not sign someone in: {said}");
        }
        return fail(
            StatusCode::UNAUTHORIZED,
            "the provider did not sign you in (what it said is in the gateway's log); start again"
                .into(),
        );
    }
    let (Some(code), Some(state_value)) = (q.code, q.state) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "the provider's answer has no code or state".into(),
        );
    };
    let Some(pending) = ui.sessions.finish(&state_value) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "this sign-in is unknown, was already used or took longer than 10 minutes; start again"
                .into(),
        );
    };
    if cookie_of(ui, &headers, LOGIN_COOKIE).as_deref() != Some(pending.browser.as_str()) {
        return fail(
            StatusCode::BAD_REQUEST,
            "this sign-in was started in another browser".into(),
        );
    }
    let id_token = match provider.exchange(&code, &pending.code_verifier).await {
        Ok(t) => t,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, e),
    };
    let who = match super::approvals::who(&app, &bearer(&id_token), &Method::GET, peer, "web page")
        .await
    {
        Ok(p) => p,
        Err(resp) => {
            let why = pages::api_error(resp).await;
            return fail(
                StatusCode::UNAUTHORIZED,
                format!("the provider's ID token is not accepted: {why}"),
            );
        }
    };
    if ui::oidc::nonce_of(&id_token).as_deref() != Some(pending.nonce.as_str()) {
        return fail(
            StatusCode::UNAUTHORIZED,
            "the ID token's nonce is not this sign-in's (a replayed token?)".into(),
        );
    }
    let mut resp = start_session(&app, &id_token, &who, &pending.next);
    set_cookie(&mut resp, ui, LOGIN_COOKIE, "", 0);
    resp
}

/// The viewer of a page.
pub(super) fn viewer<'a>(session: &'a Session, who: &'a Principal) -> Viewer<'a> {
    Viewer {
        name: &who.name,
        csrf: &session.csrf,
    }
}
