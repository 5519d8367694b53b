//! Bearer-token checks: `POST` always needs the token; reads need it when the server is
//! reachable beyond loopback.

use axum::http::{HeaderMap, Method, header};
use secrecy::{ExposeSecret, SecretString};

use crate::api::ApiError;

pub(crate) struct Auth {
    token: Option<SecretString>,
    reads_need_token: bool,
}

impl Auth {
    pub(crate) fn new(token: Option<SecretString>, reads_need_token: bool) -> Self {
        Auth {
            token,
            reads_need_token,
        }
    }

    /// Whether the server has a token at all.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request with these headers may go on.
    pub(crate) fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let writes = method != Method::GET && method != Method::HEAD;
        if !writes && !self.reads_need_token {
            return Ok(());
        }
        let Some(token) = &self.token else {
            return Err(ApiError::forbidden(
                "this endpoint needs a bearer token and the server has none: set \
                 PGFERRY_HTTP_TOKEN (or http.token_env in the task file) and restart the run",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), token.expose_secret().as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::unauthorized("the bearer token does not match")),
            None => Err(ApiError::unauthorized(
                "send the token as `Authorization: Bearer <token>`",
            )),
        }
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn posts_always_need_the_token() {
        let open = Auth::new(None, false);
        assert!(open.check(&Method::GET, &headers(None)).is_ok());
        assert_eq!(
            open.check(&Method::POST, &headers(None))
                .unwrap_err()
                .status(),
            403
        );
        let with = Auth::new(Some(SecretString::from("s3cret")), false);
        assert!(with.check(&Method::GET, &headers(None)).is_ok());
        assert_eq!(
            with.check(&Method::POST, &headers(None))
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            with.check(&Method::POST, &headers(Some("Bearer nope")))
                .unwrap_err()
                .status(),
            401
        );
        assert!(
            with.check(&Method::POST, &headers(Some("Bearer s3cret")))
                .is_ok()
        );
    }

    #[test]
    fn beyond_loopback_reads_need_it_too() {
        let remote = Auth::new(Some(SecretString::from("s3cret")), true);
        assert_eq!(
            remote
                .check(&Method::GET, &headers(None))
                .unwrap_err()
                .status(),
            401
        );
        assert!(
            remote
                .check(&Method::GET, &headers(Some("Bearer s3cret")))
                .is_ok()
        );
    }
}
