//! The API that `template.yaml` deploys matches the router: every user route the function serves is
//! wired behind the Cognito authorizer, and only admin routes use IAM authorization.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use claim_api::{ADMIN_ROUTES, ROUTES};
use serde_yaml::Value;

fn template() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `(route, authorizer)` of every API event of the claim-api function; `None` = the default one.
fn deployed_routes() -> Vec<(String, Option<String>)> {
    let template = template();
    let events = template["Resources"]["ClaimApiFunction"]["Properties"]["Events"]
        .as_mapping()
        .unwrap();
    events
        .values()
        .filter(|event| event["Type"].as_str() == Some("Api"))
        .map(|event| {
            let props = &event["Properties"];
            let route = format!(
                "{} {}",
                props["Method"].as_str().unwrap(),
                props["Path"].as_str().unwrap()
            );
            // IAM routes must not make API Gateway call the function with the caller's credentials
            // (SAM's default), or operators would need lambda:InvokeFunction.
            if props["Auth"]["Authorizer"].as_str() == Some("AWS_IAM") {
                assert_eq!(props["Auth"]["InvokeRole"].as_str(), Some("NONE"), "{route}");
            }
            (route, props["Auth"]["Authorizer"].as_str().map(str::to_owned))
        })
        .collect()
}

#[test]
fn every_user_route_is_deployed_behind_the_default_cognito_authorizer() {
    let user_routes: BTreeSet<String> = deployed_routes()
        .into_iter()
        .filter(|(route, _)| !route.contains("/v1/admin/"))
        .map(|(route, authorizer)| {
            assert_eq!(authorizer, None, "{route} must use the Cognito authorizer");
            route
        })
        .collect();
    let served: BTreeSet<String> = ROUTES.iter().map(|route| (*route).to_owned()).collect();
    assert_eq!(user_routes, served);
    assert_eq!(
        template()["Resources"]["ClaimApi"]["Properties"]["Auth"]["DefaultAuthorizer"].as_str(),
        Some("CognitoUsers")
    );
}

#[test]
fn admin_routes_use_iam_authorization() {
    let admin: Vec<_> = deployed_routes()
        .into_iter()
        .filter(|(route, _)| route.contains("/v1/admin/"))
        .collect();
    let deployed: BTreeSet<String> = admin
        .into_iter()
        .map(|(route, authorizer)| {
            assert_eq!(authorizer.as_deref(), Some("AWS_IAM"), "{route}");
            route
        })
        .collect();
    let served: BTreeSet<String> = ADMIN_ROUTES.iter().map(|route| (*route).to_owned()).collect();
    assert_eq!(deployed, served);
}

/// The request budget's bounds are checked against the deployed function's timeout: the function
/// always answers (`503` at worst) before Lambda cuts it off. A budget the template sets must be
/// one the function accepts.
#[test]
fn the_request_budget_stays_well_below_the_deployed_function_timeout() {
    use claim_api::config::{
        request_budget_from, DEFAULT_REQUEST_BUDGET, FUNCTION_TIMEOUT, MAX_REQUEST_BUDGET, MIN_REQUEST_BUDGET,
    };
    let template = template();
    let function = &template["Resources"]["ClaimApiFunction"]["Properties"];
    let timeout = function["Timeout"]
        .as_u64()
        .or_else(|| template["Globals"]["Function"]["Timeout"].as_u64())
        .unwrap();
    assert_eq!(
        timeout,
        FUNCTION_TIMEOUT.as_secs(),
        "claim_api::config::FUNCTION_TIMEOUT"
    );
    assert!(MAX_REQUEST_BUDGET + std::time::Duration::from_secs(2) <= FUNCTION_TIMEOUT);
    // The stack parameter feeds REQUEST_BUDGET_MS; its bounds and default are the function's.
    assert_eq!(
        function["Environment"]["Variables"]["REQUEST_BUDGET_MS"],
        serde_yaml::from_str::<serde_yaml::Value>("!Ref RequestBudgetMs").unwrap()
    );
    let parameter = &template["Parameters"]["RequestBudgetMs"];
    let millis = |key: &str| {
        parameter[key]
            .as_u64()
            .unwrap_or_else(|| panic!("RequestBudgetMs.{key}"))
    };
    assert_eq!(millis("MinValue"), MIN_REQUEST_BUDGET.as_millis() as u64);
    assert_eq!(millis("MaxValue"), MAX_REQUEST_BUDGET.as_millis() as u64);
    assert_eq!(millis("Default"), DEFAULT_REQUEST_BUDGET.as_millis() as u64);
    for bound in ["MinValue", "Default", "MaxValue"] {
        request_budget_from(Some(&millis(bound).to_string())).unwrap();
    }
}
