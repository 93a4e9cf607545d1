//! XEP-0156 discovery: `/.well-known/host-meta` (XRD, RFC 6415) and
//! `/.well-known/host-meta.json` (JRD) name the WebSocket endpoint
//! (`urn:xmpp:alt-connections:websocket`) and the BOSH one (`urn:xmpp:alt-connections:xbosh`,
//! the same base with `https`/`http` and `/http-bind`). The URL is `public_url` + `/xmpp-websocket` when
//! configured, else the request's own scheme and `Host` (so it is right for whoever reached
//! this listener directly, and must be configured behind a proxy that changes either).

use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{Connection, Web, WEBSOCKET_PATH};

const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// Both documents: JSON for `host-meta.json`, XRD otherwise.
pub(super) async fn host_meta(
    State(web): State<Web>,
    Extension(conn): Extension<Connection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let public = web.ctx.config.http_public_url.as_deref();
    let Some(url) = websocket_url(public, &headers, conn.tls) else {
        return no_host();
    };
    let bosh = bosh_url(&url);
    if uri.path().ends_with(".json") {
        let body = serde_json::json!({ "links": [
            { "rel": REL_WEBSOCKET, "href": url },
            { "rel": REL_BOSH, "href": bosh },
        ] });
        return discovery("application/json", format!("{body}\n"));
    }
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  <Link rel='{REL_WEBSOCKET}' href='{}'/>\n  <Link rel='{REL_BOSH}' href='{}'/>\n</XRD>\n",
        meerkat_xmpp::escape_attr(&url),
        meerkat_xmpp::escape_attr(&bosh)
    );
    discovery("application/xrd+xml; charset=utf-8", body)
}

/// XEP-0156 §3: browser clients read it from pages of other origins (CORS).
fn discovery(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        body,
    )
        .into_response()
}

fn no_host() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "a Host header naming this server is needed (or configure http_public_url)\n",
    )
        .into_response()
}

/// The WebSocket URL to advertise: from `public` (`https://host[:port][/prefix]`) when set,
/// else from the request (`wss` on the HTTPS listener, `ws` on the plain one, and its `Host`,
/// which must look like a host and port).
pub(crate) fn websocket_url(
    public: Option<&str>,
    headers: &HeaderMap,
    tls: bool,
) -> Option<String> {
    if let Some(base) = public {
        let base = base.trim_end_matches('/');
        let (scheme, rest) = base.split_once("://")?;
        let ws = if scheme.eq_ignore_ascii_case("https") {
            "wss"
        } else {
            "ws"
        };
        return Some(format!("{ws}://{rest}{WEBSOCKET_PATH}"));
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plausible = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !plausible {
        return None;
    }
    let scheme = if tls { "wss" } else { "ws" };
    Some(format!("{scheme}://{host}{WEBSOCKET_PATH}"))
}

/// The BOSH URL beside a WebSocket one: the same host and prefix over HTTP(S).
pub(crate) fn bosh_url(websocket: &str) -> String {
    let base = websocket.strip_suffix(WEBSOCKET_PATH).unwrap_or(websocket);
    let base = if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        base.to_owned()
    };
    format!("{base}{}", super::bosh::BOSH_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn the_url_is_the_configured_one_or_the_request_s() {
        assert_eq!(
            websocket_url(Some("https://xmpp.example.com/"), &host("x"), false).as_deref(),
            Some("wss://xmpp.example.com/xmpp-websocket")
        );
        assert_eq!(
            websocket_url(Some("http://127.0.0.1:5280/chat"), &HeaderMap::new(), true).as_deref(),
            Some("ws://127.0.0.1:5280/chat/xmpp-websocket")
        );
        assert_eq!(
            websocket_url(None, &host("127.0.0.1:5281"), true).as_deref(),
            Some("wss://127.0.0.1:5281/xmpp-websocket")
        );
        assert_eq!(
            websocket_url(None, &host("[::1]:5280"), false).as_deref(),
            Some("ws://[::1]:5280/xmpp-websocket")
        );
        assert_eq!(
            bosh_url("wss://xmpp.example.com/chat/xmpp-websocket"),
            "https://xmpp.example.com/chat/http-bind"
        );
        assert_eq!(
            bosh_url("ws://127.0.0.1:5280/xmpp-websocket"),
            "http://127.0.0.1:5280/http-bind"
        );
        assert_eq!(websocket_url(None, &HeaderMap::new(), false), None);
        assert_eq!(websocket_url(None, &host("a'b"), false), None);
        assert_eq!(websocket_url(None, &host("a/b"), false), None);
    }
}
