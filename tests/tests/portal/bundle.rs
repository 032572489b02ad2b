//! The local-only sign-in cannot reach a deployed portal: `portal/build.mjs` builds it only into the
//! local bundle (`dist-local/`); the production bundle (`dist/`, the only one a deployment uploads)
//! has none of its code. `scripts/dev.sh` builds both first.

use std::path::{Path, PathBuf};

fn bundle(dir: &str) -> (String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../portal").join(dir);
    let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let html = read(&dir.join("index.html"));
    let script = html
        .split("src=\"/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no script in {}", dir.display()));
    (html.clone(), read(&dir.join(script)))
}

#[test]
fn the_production_bundle_has_no_local_sign_in_and_the_local_one_has() {
    let (_, production) = bundle("dist");
    let (_, local) = bundle("dist-local");
    for marker in ["x-local-user", "local-sign-in", "local-name"] {
        assert!(
            !production.contains(marker),
            "the production bundle contains {marker:?}"
        );
        assert!(
            local.contains(marker),
            "the local bundle lacks {marker:?} (so this test proves nothing)"
        );
    }
    // And it still signs in: the hosted UI's authorization code flow with PKCE.
    for needed in ["/oauth2/authorize", "code_challenge", "S256", "/oauth2/token"] {
        assert!(production.contains(needed), "the production bundle lacks {needed:?}");
    }
}
