#!/usr/bin/env bash
# Builds the registration portal (portal/, docs/portal.md) and publishes it to a deployed stack: the
# production bundle with its config.json (the stack's API URL, hosted UI and app client) into the
# portal bucket, then a CloudFront invalidation of the two files whose names carry no content hash.
# Content-hashed files are cached for a year, index.html and config.json revalidated. Safe to run again.
#
# usage: infra/publish-portal.sh --stack NAME [--oem-name TEXT] [--regions JSON]
#   --regions: the region picker, e.g. '[{"id": "eu-west-1", "label": "Europe"}]' (none by default)
#
# Exit codes: 0 published, 2 bad arguments or configuration; otherwise the failing tool's.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/.." && pwd)
portal="$root/portal"

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
stack='' oem_name='the manufacturer' regions='[]'
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) stack=${2:-}; shift 2 || die "--stack needs a name" ;;
    --oem-name) oem_name=${2:-}; shift 2 || die "--oem-name needs a text" ;;
    --regions) regions=${2:-}; shift 2 || die "--regions needs JSON" ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
done
[ -n "$stack" ] || { usage >&2; die "--stack NAME is required"; }
command -v node >/dev/null || die "Node.js (with npm) is needed to build the portal"
need_aws
api=$(stack_output "$stack" ApiUrl)
bucket=$(stack_output "$stack" PortalBucketName)
distribution=$(stack_output "$stack" PortalDistributionId)
hosted_ui=$(stack_output "$stack" UserPoolHostedUiUrl)
client=$(stack_output "$stack" UserPoolAppClientId)
url=$(stack_output "$stack" PortalUrl)

say "building the portal's production bundle"
[ -f "$portal/node_modules/.package-lock.json" ] || (cd "$portal" && npm ci --no-audit --no-fund)
(cd "$portal" && node build.mjs)
# config.json, written by Python's json module so that no value can break its syntax.
OEM_NAME=$oem_name REGIONS=$regions API=$api HOSTED_UI=$hosted_ui CLIENT=$client python3 - "$portal/dist/config.json" <<'PY' \
  || die "--regions: not a JSON list of {\"id\", \"label\"}"
import json, os, sys
regions = json.loads(os.environ["REGIONS"])
ok = isinstance(regions, list) and all(
    isinstance(r, dict) and set(r) == {"id", "label"} and all(isinstance(v, str) and v for v in r.values())
    for r in regions)
if not ok:
    sys.exit(1)
config = {"apiUrl": os.environ["API"], "oemName": os.environ["OEM_NAME"],
          "auth": {"kind": "cognito", "domain": os.environ["HOSTED_UI"], "clientId": os.environ["CLIENT"],
                   "scopes": "openid email"},
          "regions": regions}
with open(sys.argv[1], "w") as out:
    json.dump(config, out)
PY

say "uploading to s3://$bucket"
# Hashed files first, so the index.html uploaded last never names a file not there yet.
immutable="public, max-age=31536000, immutable"
aws s3 sync "$portal/dist/" "s3://$bucket/" --delete --only-show-errors \
  --exclude index.html --exclude config.json --exclude '*.wasm' --cache-control "$immutable"
# The QR decoder's WebAssembly, with the type browsers compile it from while it downloads.
aws s3 cp "$portal/dist/" "s3://$bucket/" --recursive --only-show-errors --exclude '*' --include '*.wasm' \
  --content-type application/wasm --cache-control "$immutable"
aws s3 cp "$portal/dist/config.json" "s3://$bucket/config.json" --only-show-errors \
  --cache-control no-cache --content-type application/json
aws s3 cp "$portal/dist/index.html" "s3://$bucket/index.html" --only-show-errors \
  --cache-control no-cache --content-type "text/html; charset=utf-8"
aws cloudfront create-invalidation --distribution-id "$distribution" --paths /index.html /config.json \
  --query Invalidation.Id --output text >/dev/null
say "published: $url (its QR codes hold $url/claim?code=<label code>)"
