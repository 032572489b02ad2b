//! The routes of `docs/api.md`: which handler a method and path go to. Logs name a route by its
//! template, never by its raw path (raw paths carry label codes).

use lambda_http::http::Method;

use crate::errors::ApiError;

/// Every user route this function serves, as `METHOD /path/{param}` (`infra/openapi.yaml` and
/// `template.yaml` list exactly these; tests check both ways).
pub const ROUTES: [&str; 6] = [
    "POST /v1/claims",
    "GET /v1/claims/{claim_id}",
    "POST /v1/claims/{claim_id}/retry",
    "GET /v1/devices",
    "GET /v1/devices/{thing_name}",
    "DELETE /v1/devices/{thing_name}",
];

/// The admin routes, as `METHOD /path/{param}`.
pub const ADMIN_ROUTES: [&str; 5] = [
    "PUT /v1/admin/devices",
    "GET /v1/admin/devices/{thing_name}",
    "POST /v1/admin/devices/{thing_name}/release",
    "POST /v1/admin/devices/{thing_name}/disable",
    "POST /v1/admin/devices/{thing_name}/enable",
];

/// A matched route and its raw path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    CreateClaim,
    GetClaim(String),
    RetryClaim(String),
    ListDevices,
    GetDevice(String),
    ReleaseDevice(String),
    Admin(AdminRoute),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRoute {
    Import,
    Inspect(String),
    Release(String),
    Disable(String),
    Enable(String),
}

impl Route {
    pub fn template(&self) -> &'static str {
        match self {
            Route::Admin(route) => route.template(),
            Route::CreateClaim => ROUTES[0],
            Route::GetClaim(_) => ROUTES[1],
            Route::RetryClaim(_) => ROUTES[2],
            Route::ListDevices => ROUTES[3],
            Route::GetDevice(_) => ROUTES[4],
            Route::ReleaseDevice(_) => ROUTES[5],
        }
    }
}

impl AdminRoute {
    pub fn template(&self) -> &'static str {
        match self {
            AdminRoute::Import => ADMIN_ROUTES[0],
            AdminRoute::Inspect(_) => ADMIN_ROUTES[1],
            AdminRoute::Release(_) => ADMIN_ROUTES[2],
            AdminRoute::Disable(_) => ADMIN_ROUTES[3],
            AdminRoute::Enable(_) => ADMIN_ROUTES[4],
        }
    }

    /// `rest`: the path after `/v1/admin`.
    fn parse(method: &Method, rest: &[&str]) -> Result<Self, ApiError> {
        let route = match (method, rest) {
            (&Method::PUT, ["devices"]) => AdminRoute::Import,
            (&Method::GET, ["devices", thing]) => AdminRoute::Inspect((*thing).to_owned()),
            (&Method::POST, ["devices", thing, "release"]) => AdminRoute::Release((*thing).to_owned()),
            (&Method::POST, ["devices", thing, "disable"]) => AdminRoute::Disable((*thing).to_owned()),
            (&Method::POST, ["devices", thing, "enable"]) => AdminRoute::Enable((*thing).to_owned()),
            (_, ["devices"]) => return Err(ApiError::method_not_allowed("PUT")),
            (_, ["devices", _]) => return Err(ApiError::method_not_allowed("GET")),
            (_, ["devices", _, "release" | "disable" | "enable"]) => return Err(ApiError::method_not_allowed("POST")),
            _ => return Err(ApiError::not_found()),
        };
        Ok(route)
    }
}

/// Matches the path from its `v1` segment on, so a REST API stage prefix (`/prod/v1/...`) does not
/// matter. Each segment is percent-decoded (a generated client sends `:` in a ThingName as `%3A`);
/// one that does not decode to UTF-8 stays as it came and matches no device or claim.
pub fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let decoded: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map_or_else(|_| segment.to_owned(), |text| text.into_owned())
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let start = segments.iter().position(|s| *s == "v1");
    let rest = start.map(|i| &segments[i + 1..]).unwrap_or(&[]);
    if let ["admin", admin_path @ ..] = rest {
        return AdminRoute::parse(method, admin_path).map(Route::Admin);
    }
    let route = match (method, rest) {
        (&Method::POST, ["claims"]) => Route::CreateClaim,
        (&Method::GET, ["claims", id]) => Route::GetClaim((*id).to_owned()),
        (&Method::POST, ["claims", id, "retry"]) => Route::RetryClaim((*id).to_owned()),
        (&Method::GET, ["devices"]) => Route::ListDevices,
        (&Method::GET, ["devices", thing]) => Route::GetDevice((*thing).to_owned()),
        (&Method::DELETE, ["devices", thing]) => Route::ReleaseDevice((*thing).to_owned()),
        // The methods each resource has (`Allow`, RFC 9110 §15.5.6).
        (_, ["claims"] | ["claims", _, "retry"]) => return Err(ApiError::method_not_allowed("POST")),
        (_, ["claims", _] | ["devices"]) => return Err(ApiError::method_not_allowed("GET")),
        (_, ["devices", _]) => return Err(ApiError::method_not_allowed("GET, DELETE")),
        _ => return Err(ApiError::not_found()),
    };
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::StatusCode;

    #[test]
    fn every_route_template_is_listed() {
        for route in [
            Route::CreateClaim,
            Route::GetClaim("x".into()),
            Route::RetryClaim("x".into()),
            Route::ListDevices,
            Route::GetDevice("x".into()),
            Route::ReleaseDevice("x".into()),
        ] {
            assert!(ROUTES.contains(&route.template()), "{route:?}");
        }
    }

    #[test]
    fn routes_match_from_the_v1_segment_on() {
        assert_eq!(route(&Method::POST, "/v1/claims"), Ok(Route::CreateClaim));
        assert_eq!(route(&Method::POST, "/prod/v1/claims/"), Ok(Route::CreateClaim));
        assert_eq!(route(&Method::GET, "/v1/devices/d1"), Ok(Route::GetDevice("d1".into())));
        assert_eq!(
            route(&Method::GET, "/v1/devices/colon%3Adev-1"),
            Ok(Route::GetDevice("colon:dev-1".into())),
            "path segments are percent-decoded"
        );
        assert_eq!(
            route(&Method::POST, "/v1/admin/devices/a%3Ab/release"),
            Ok(Route::Admin(AdminRoute::Release("a:b".into())))
        );
        assert_eq!(
            route(&Method::GET, "/v1/devices/%FF"),
            Ok(Route::GetDevice("%FF".into()))
        );
        assert_eq!(
            route(&Method::PUT, "/v1/claims").map_err(|e| (e.status, e.allow)),
            Err((StatusCode::METHOD_NOT_ALLOWED, Some("POST")))
        );
        assert_eq!(
            route(&Method::TRACE, "/v1/devices/d1").map_err(|e| e.allow),
            Err(Some("GET, DELETE"))
        );
        assert_eq!(
            route(&Method::GET, "/v2/claims").map_err(|e| e.status),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            route(&Method::GET, "/v1/claims/a/b").map_err(|e| e.status),
            Err(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn admin_paths_parse_and_wrong_methods_are_405() {
        assert_eq!(
            route(&Method::PUT, "/v1/admin/devices"),
            Ok(Route::Admin(AdminRoute::Import))
        );
        assert_eq!(
            route(&Method::POST, "/v1/admin/devices/d1/release"),
            Ok(Route::Admin(AdminRoute::Release("d1".into())))
        );
        assert_eq!(
            route(&Method::DELETE, "/v1/admin/devices/d1").map_err(|e| e.status),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            route(&Method::GET, "/v1/admin/claims").map_err(|e| e.status),
            Err(StatusCode::NOT_FOUND)
        );
    }
}
