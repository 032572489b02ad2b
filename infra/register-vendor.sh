#!/usr/bin/env bash
# Registers a module vendor with a deployed claim backend, or updates its profile:
#   - its claim-thing profile goes into the secret <ClaimThingSecretPrefix><vendor> (created if absent,
#     a new version otherwise): transport, staging endpoint, port, and for mqtt/https the claim-thing
#     certificate, private key and client id (the UUID AWS issued, OEM guide Appendix A);
#   - with --vendor-ca, the vendor's CA is registered in this account for JITP (SNI_ONLY,
#     auto-registration, the stack's provisioning role and device policy; OEM guide Appendix B and C).
#
# usage: infra/register-vendor.sh --stack NAME --vendor NAME --staging-endpoint HOST
#          [--transport mqtt|https|iam] [--port N] [--client-id UUID]
#          [--certificate FILE --private-key FILE] [--ca-bundle FILE]
#          [--vendor-ca FILE] [--thing-name-field CommonName|SerialNumber]
#
# Prints what it changed; never prints the key or the certificate. Exit 0 done, 2 bad input, 1 AWS error.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

stack='' vendor='' endpoint='' transport=mqtt port='' client_id='' cert='' key='' ca_bundle='' vendor_ca=''
field=CommonName
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) stack=${2:-}; shift 2 ;;
    --vendor) vendor=${2:-}; shift 2 ;;
    --staging-endpoint) endpoint=${2:-}; shift 2 ;;
    --transport) transport=${2:-}; shift 2 ;;
    --port) port=${2:-}; shift 2 ;;
    --client-id) client_id=${2:-}; shift 2 ;;
    --certificate) cert=${2:-}; shift 2 ;;
    --private-key) key=${2:-}; shift 2 ;;
    --ca-bundle) ca_bundle=${2:-}; shift 2 ;;
    --vendor-ca) vendor_ca=${2:-}; shift 2 ;;
    --thing-name-field) field=${2:-}; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[ -n "$stack" ] || die "--stack is required"
need_match --vendor "$vendor" '^[A-Za-z0-9._-]{1,64}$' "a vendor name (1-64 of A-Z a-z 0-9 . _ -)"
need_match --transport "$transport" '^(mqtt|https|iam)$' "one of mqtt, https, iam"
if [ "$transport" != iam ] || [ -n "$endpoint" ]; then
  need_match --staging-endpoint "$endpoint" '^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$' "a host name (no scheme, port or path)"
fi
[ -z "$port" ] || need_match --port "$port" '^[1-9][0-9]{0,4}$' "a port number"
case "$field" in CommonName|SerialNumber) ;; *) die "--thing-name-field must be CommonName or SerialNumber" ;; esac
if [ "$transport" != iam ]; then
  need_pem --certificate "$cert" CERTIFICATE
  need_pem --private-key "$key" "PRIVATE KEY"
  if command -v openssl >/dev/null; then
    [ "$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null | sha256sum)" = "$(openssl pkey -in "$key" -pubout 2>/dev/null | sha256sum)" ] \
      || die "--private-key does not belong to --certificate"
  fi
fi
if [ "$transport" = mqtt ]; then
  need_match --client-id "$client_id" '^[A-Za-z0-9:_-]{1,128}$' "the client id (the UUID AWS issued for your claim-thing)"
fi
[ -z "$ca_bundle" ] || need_pem --ca-bundle "$ca_bundle" CERTIFICATE
[ -z "$vendor_ca" ] || need_pem --vendor-ca "$vendor_ca" CERTIFICATE
need_aws

prefix=$(stack_output "$stack" ClaimThingSecretPrefix)
secret="$prefix$vendor"
# The JSON is built by Python from files, so the key never appears on a command line or in output.
profile=$(TRANSPORT=$transport ENDPOINT=$endpoint PORT=$port CLIENT_ID=$client_id CERT=$cert KEY=$key CA=$ca_bundle \
  python3 -c '
import json, os
def read(name):
    path = os.environ[name]
    return open(path).read() if path else None
profile = {"transport": os.environ["TRANSPORT"]}
for field, value in [("staging_endpoint", os.environ["ENDPOINT"] or None),
                     ("port", int(os.environ["PORT"]) if os.environ["PORT"] else None),
                     ("client_id", os.environ["CLIENT_ID"] or None),
                     ("certificate_pem", read("CERT")), ("private_key_pem", read("KEY")),
                     ("ca_pem", read("CA"))]:
    if value is not None:
        profile[field] = value
print(json.dumps(profile))')
profile_file=$(mktemp)
trap 'rm -f "$profile_file"' EXIT
chmod 600 "$profile_file"
printf '%s' "$profile" > "$profile_file"

if aws secretsmanager describe-secret --secret-id "$secret" >/dev/null 2>&1; then
  version=$(aws secretsmanager put-secret-value --secret-id "$secret" --secret-string "file://$profile_file" \
    --query VersionId --output text)
  say "updated secret $secret (new version $version; warm functions pick it up within the secret cache TTL)"
else
  arn=$(aws secretsmanager create-secret --name "$secret" --secret-string "file://$profile_file" \
    --description "Claim-thing of stack $stack in the staging account of module vendor $vendor" --query ARN --output text)
  say "created secret $arn"
fi
say "vendor $vendor: transport $transport, staging endpoint ${endpoint:-(the data endpoint of the function region)}${port:+, port $port}"

if [ -n "$vendor_ca" ]; then
  role=$(stack_output "$stack" ProvisioningRoleArn)
  policy=$(stack_output "$stack" DevicePolicyName)
  config=$(ROLE=$role POLICY=$policy FIELD=$field python3 -c '
import json, os
field = "AWS::IoT::Certificate::" + os.environ["FIELD"]
body = {"Parameters": {field: {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}},
        "Resources": {
          "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": field}}},
          "certificate": {"Type": "AWS::IoT::Certificate",
                          "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
          "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": os.environ["POLICY"]}}}}
print(json.dumps({"templateBody": json.dumps(body), "roleArn": os.environ["ROLE"]}))')
  ca_id=$(aws iot register-ca-certificate --ca-certificate "file://$vendor_ca" --certificate-mode SNI_ONLY \
    --set-as-active --allow-auto-registration --registration-config "$config" --query certificateId --output text)
  say "registered the vendor CA for JITP: certificate id $ca_id (thing name from the certificate's $field)"
  say "for the rogue-device gate, deploy with --parameter-overrides VendorCaCertificateIds=$ca_id (docs/operations.md, Rogue devices)"
fi
