# Shared by the infra/ scripts: messages, argument checks and stack outputs. Sourced, not run.
# shellcheck shell=bash

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

need_aws() {
  command -v aws >/dev/null || die "the AWS CLI v2 is needed: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
  aws sts get-caller-identity --query Account --output text >/dev/null 2>&1 \
    || die "the AWS CLI has no working credentials (aws configure, or AWS_PROFILE / AWS_REGION)"
}

# stack_output STACK KEY: one output of the deployed stack, or an error naming it.
stack_output() {
  local value
  value=$(aws cloudformation describe-stacks --stack-name "$1" \
    --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue | [0]" --output text 2>/dev/null) \
    || die "cannot read stack $1 (deployed in this account and region?)"
  [ -n "$value" ] && [ "$value" != None ] || die "stack $1 has no output $2"
  printf '%s' "$value"
}

need_file() { [ -f "$2" ] && [ -r "$2" ] || die "$1: cannot read file $2"; }

# need_pem OPTION FILE KIND: FILE is PEM of KIND (CERTIFICATE, PRIVATE KEY, ...).
need_pem() {
  need_file "$1" "$2"
  grep -q -- "-----BEGIN .*$3-----" "$2" || die "$1: $2 is not a PEM $3"
}

need_match() { # option value regex description
  [[ $2 =~ $3 ]] || die "$1: '$2' is not $4"
}
