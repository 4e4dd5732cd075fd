//! The web console's assets and the address QR code, through the router in process: the
//! assets are served without a token, with their content types and a Content-Security-Policy
//! that admits no inline script; the script never writes markup; the QR code encodes the
//! address the API lists. The console in a real browser: `mpc-wallet --test console`.

mod common;

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
};
use common::{cluster, Api};
use mpc_api::Role;
use mpc_bitcoin::{Chain, Scheme};
use mpc_node::testing::wallet;
use tower::ServiceExt;

/// Status, headers and body of a GET without a token.
async fn get(api: &Api, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = api
        .router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_under_a_strict_content_security_policy() {
    let c = cluster(|_| {}).await;
    let api = Api::of(&c.nodes[0]);
    for (path, content_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/", "text/html; charset=utf-8"),
        ("/console/index.html", "text/html; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
    ] {
        let (status, headers, body) = get(&api, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert_eq!(csp, mpc_api::console::CONTENT_SECURITY_POLICY);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(!body.is_empty(), "{path}");
    }
    let policy: Vec<&str> = mpc_api::console::CONTENT_SECURITY_POLICY
        .split(';')
        .map(str::trim)
        .collect();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(&directive), "{directive} in {policy:?}");
    }
    assert!(
        !mpc_api::console::CONTENT_SECURITY_POLICY.contains("unsafe"),
        "no unsafe-inline or unsafe-eval"
    );

    // The page loads its script and style from files, never inline; the script builds the
    // page from text only.
    let (_, _, html) = get(&api, "/console").await;
    assert!(html.contains(r#"<script src="/console/console.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1, "one script, by src");
    assert!(!html.contains("<style") && !html.contains(" style="));
    let handlers: Vec<&str> = html
        .split_whitespace()
        .filter(|w| w.starts_with("on") && w.contains('='))
        .collect();
    assert!(handlers.is_empty(), "inline event handlers: {handlers:?}");
    let (_, _, script) = get(&api, "/console/console.js").await;
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ] {
        assert!(!script.contains(sink), "console.js uses {sink}");
    }

    let (status, _, body) = get(&api, "/console/secret.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, _) = get(&api, "/console/../api/v1/wallets").await;
    assert_ne!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_qr_code_encodes_the_address_the_api_lists() {
    let c = cluster(|_| {}).await;
    let api = Api::of(&c.nodes[0]);
    let (id, key) = wallet(&c, Scheme::Schnorr).await;
    for (chain, name) in [(Chain::Receive, "receive"), (Chain::Change, "change")] {
        let address = key.chain_address(chain, 5).unwrap().to_string();
        let listed = api
            .call(
                Method::GET,
                &format!("/api/v1/wallets/{id}/addresses?chain={name}&from=5&count=1"),
                Some(Role::Viewer),
                None,
            )
            .await;
        assert_eq!(listed.body[0]["address"], address.as_str());
        let qr = api
            .call(
                Method::GET,
                &format!("/api/v1/wallets/{id}/addresses/5/qr?chain={name}"),
                Some(Role::Viewer),
                None,
            )
            .await;
        assert_eq!(qr.status, StatusCode::OK);
        assert_eq!(qr.content_type.as_deref(), Some("image/svg+xml"));
        let svg = qr.body.as_str().unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
        assert_eq!(
            svg,
            mpc_api::routes::address_qr_svg(&address).unwrap(),
            "{name} 5"
        );
        // Another address's code differs.
        let other = key.chain_address(chain, 6).unwrap().to_string();
        assert_ne!(svg, mpc_api::routes::address_qr_svg(&other).unwrap());
    }
    let hardened = api
        .call(
            Method::GET,
            &format!("/api/v1/wallets/{id}/addresses/2147483648/qr"),
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(
        hardened.status,
        StatusCode::BAD_REQUEST,
        "{}",
        hardened.body
    );
    let unknown = api
        .call(
            Method::GET,
            "/api/v1/wallets/no-such-wallet/addresses/0/qr",
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
}
