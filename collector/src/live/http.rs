//! The live view's HTTP routes, merged into the metrics endpoint:
//!
//! - `GET /v1/owner?address=A&at=TIME`: an [`OwnerReport`] as JSON. `at` is
//!   RFC 3339 or Unix nanoseconds, default now. 400 for a bad request.
//! - `GET /v1/map`: a [`LiveStatus`] as JSON.
//! - `GET /`: the page (`page.html`, self-contained), with the status it
//!   starts from inlined; its script refreshes it from `/v1/map`.
//!
//! Every answer comes from the core through [`Queries`]: 503 when its queue
//! is full or it does not answer within [`ANSWER_WITHIN`].

use std::{net::IpAddr, time::Duration};

use axum::{
    Router,
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::{LiveStatus, OwnerReport, Queries, Query, Refused, time::parse_time};

/// How long a request waits for the core's answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

const PAGE: &str = include_str!("page.html");

/// The routes, answering through `queries`.
pub fn router(queries: Queries) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/v1/map", get(map))
        .route("/v1/owner", get(owner))
        .with_state(queries)
}

/// What `/v1/owner` was asked, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct OwnerRequest {
    pub address: IpAddr,
    pub at_ns: Option<u64>,
}

/// Parses `/v1/owner`'s query string; the error says what is wrong.
pub fn parse_owner_query(query: Option<&str>) -> Result<OwnerRequest, String> {
    let (mut address, mut at) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            percent_decode(value).ok_or_else(|| format!("`{key}`: bad percent-encoding"))?;
        match key {
            "address" => address = Some(value),
            "at" => at = Some(value),
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (the parameters are `address` and `at`)"
                ));
            }
        }
    }
    let address =
        address.ok_or("missing `address` (like ?address=10.0.3.7&at=2026-12-05T14:02:00Z)")?;
    let address = address
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("`address`: {address:?} is not an IPv4 or IPv6 address"))?;
    let at_ns = match at.as_deref().map(str::trim) {
        None | Some("") | Some("now") => None,
        Some(text) => Some(parse_time(text).map_err(|e| format!("`at`: {e}"))?),
    };
    Ok(OwnerRequest { address, at_ns })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space.
fn percent_decode(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }).to_string())
}

/// Asks the core and waits for its answer, or says why not (503).
async fn ask<T>(
    queries: &Queries,
    query: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Query,
) -> Result<T, Response> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    queries.ask(query(tx)).map_err(|e| {
        let status = match e {
            Refused::Busy | Refused::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        error(status, &e.to_string())
    })?;
    match tokio::time::timeout(ANSWER_WITHIN, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the collector's core stopped before answering",
        )),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the collector's core did not answer in time; try again",
        )),
    }
}

async fn owner(State(queries): State<Queries>, RawQuery(query): RawQuery) -> Response {
    let request = match parse_owner_query(query.as_deref()) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let answer: Result<OwnerReport, _> = ask(&queries, |reply| Query::Owner {
        address: request.address,
        at_ns: request.at_ns,
        reply,
    })
    .await;
    match answer {
        Ok(report) => json(
            StatusCode::OK,
            serde_json::to_string(&report).expect("serializes"),
        ),
        Err(response) => response,
    }
}

async fn map(State(queries): State<Queries>) -> Response {
    match ask(&queries, |reply| Query::Status { reply }).await {
        Ok(status) => json(
            StatusCode::OK,
            serde_json::to_string::<LiveStatus>(&status).expect("serializes"),
        ),
        Err(response) => response,
    }
}

async fn page(State(queries): State<Queries>) -> Response {
    // The page starts from the status inlined here (null if the core is
    // busy: the script then fetches it).
    let status = match ask(&queries, |reply| Query::Status { reply }).await {
        Ok(status) => serde_json::to_string::<LiveStatus>(&status).expect("serializes"),
        Err(_) => "null".into(),
    };
    // Inside a <script> element nothing may close it.
    let status = status.replace('<', "\\u003c");
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; form-action 'self'",
            ),
        ],
        PAGE.replacen("/*STATUS*/null", &status, 1),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_queries_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_owner_query(Some(
                "address=10.0.3.7&at=2026-12-05T15%3A02%3A00%2B01%3A00"
            )),
            Ok(OwnerRequest {
                address: "10.0.3.7".parse().unwrap(),
                at_ns: Some(1_796_479_320_000_000_000),
            })
        );
        assert_eq!(
            parse_owner_query(Some("at=1796479320000000000&address=fd00%3A%3A7")),
            Ok(OwnerRequest {
                address: "fd00::7".parse().unwrap(),
                at_ns: Some(1_796_479_320_000_000_000),
            })
        );
        assert_eq!(
            parse_owner_query(Some("address=10.0.3.7&at="))
                .unwrap()
                .at_ns,
            None
        );
        for (query, why) in [
            (None, "missing `address`"),
            (Some("address=10.0.3"), "not an IPv4 or IPv6 address"),
            (
                Some("address=10.0.3.7&at=noon"),
                "`at`: \"noon\" is neither RFC 3339",
            ),
            (
                Some("address=10.0.3.7&when=now"),
                "unknown parameter `when`",
            ),
            (Some("address=10.0.3.7%zz"), "bad percent-encoding"),
        ] {
            let e = parse_owner_query(query).unwrap_err();
            assert!(e.contains(why), "{query:?}: {e}");
        }
    }

    #[test]
    fn the_page_has_its_placeholder() {
        assert_eq!(PAGE.matches("/*STATUS*/null").count(), 1);
        // The SVG namespace is a name, never fetched.
        let page = PAGE.replace("http://www.w3.org/2000/svg", "");
        for remote in ["http://", "https://", "//cdn", "@import", "url(", "src=\""] {
            assert!(!page.contains(remote), "the page fetches nothing: {remote}");
        }
    }
}
