#!/usr/bin/env bash
# Imports device records (what the factory made) into a deployed stack's ownership table with
# claimctl: CSV with a header naming thing_name, vendor, sku, or JSON Lines (.jsonl). Adds devices and
# updates vendor/SKU; never touches ownership. Safe to run again; an interrupted import resumes by
# running it again. Rows that cannot be imported are listed in a report to fix and import again.
#
# usage: infra/import-devices.sh --stack NAME FILE [claimctl import options, e.g. --report FILE]
#
# Exit codes are claimctl's: 0 done, 1 some rows failed (report), 2 bad arguments, input or configuration
# (this script's own errors too), 3 table unavailable (run it again: it resumes); a device that kept
# changing is a failed row (1).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/.." && pwd)

stack=''
if [ "${1:-}" = --stack ]; then stack=${2:-}; shift 2 || true; fi
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; '') usage >&2; exit 2 ;; esac
[ -n "$stack" ] || die "--stack NAME comes first (see --help)"
file=$1; shift
need_file FILE "$file"
need_aws
table=$(stack_output "$stack" ClaimsTableName)
# Rows with a label code are hashed with the stack's key.
LABEL_CODE_KEY_SECRET=$(stack_output "$stack" LabelCodeKeySecretArn)
export LABEL_CODE_KEY_SECRET
operator=$(aws sts get-caller-identity --query Arn --output text)
say "importing $file into $table as $operator"
cargo build -q --release -p claimctl --manifest-path "$root/Cargo.toml"
CLAIMCTL_OPERATOR="$operator" "$(cd "$root" && cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/claimctl" \
  --table "$table" import "$file" "$@"
