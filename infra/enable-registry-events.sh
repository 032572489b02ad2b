#!/usr/bin/env bash
# Turns on AWS IoT registry events for things in this account and region, which JITP's "thing
# created" event needs (CloudFormation has no resource for it). Safe to run again.
#
# usage: infra/enable-registry-events.sh
#
# Prints the THING setting before and after. Exit 0 done, 1 AWS error.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; "") ;; *) die "no arguments expected" ;; esac
need_aws
before=$(aws iot describe-event-configurations --query 'eventConfigurations.THING.Enabled' --output text)
if [ "$before" = True ]; then
  say "registry events for things are already on; nothing changed"
  exit 0
fi
aws iot update-event-configurations --event-configurations '{"THING":{"Enabled":true}}'
after=$(aws iot describe-event-configurations --query 'eventConfigurations.THING.Enabled' --output text)
[ "$after" = True ] || die "registry events for things are still off"
say "registry events for things: $before -> $after (region $(aws configure get region || echo "\$AWS_REGION"))"
