"""The yardstick of `scripts/dev.sh bench --lambda`: a plain Python Lambda handler doing a claim's work.

POST /v1/claims {"code": "<ThingName>"} as API Gateway (REST API, Cognito authorizer) delivers it:
one DynamoDB transaction reserves the device and creates the claim, the claim-thing publishes the
endpoint message over MQTT with mutual TLS (connect, publish QoS 1, PUBACK, disconnect), one update
records it, and the answer is 202. The claim-thing secret is cached for 5 minutes, the TLS context
built once per secret; clients are created once per execution environment.

What it leaves out, as a plain handler would: label codes, failed-claim rate limits, idempotency
keys, the device history, endpoint selection (one OEM endpoint), a registry read (the vendor is the
deployment's one, BASELINE_VENDOR), and any care for AWS IoT's one connection per client id.
Run by awslambdaric: python -m awslambdaric handler.handler
"""

import json
import os
import ssl
import tempfile
import time
import uuid

import boto3
import paho.mqtt.client as mqtt
from botocore.config import Config

TABLE = os.environ["CLAIMS_TABLE"]
VENDOR = os.environ["BASELINE_VENDOR"]
SECRET_ID = os.environ.get("CLAIM_THING_SECRET_PREFIX", "expresslink/claim-thing/") + VENDOR
OEM_ENDPOINT = os.environ["OEM_ENDPOINT"]
SECRET_TTL_S = 300
CLAIM_DEADLINE_MS = 15 * 60 * 1000
PUBLISH_TIMEOUT_S = 5

# The same deadlines as the Rust functions' SDK configuration: connect 1 s, attempt 1 s, 2 attempts.
_config = Config(connect_timeout=1, read_timeout=1, retries={"total_max_attempts": 2, "mode": "standard"})
dynamodb = boto3.client("dynamodb", config=_config)
secrets = boto3.client("secretsmanager", config=_config)
_profile = None  # (profile, TLS context, fetched at)


def claim_thing():
    global _profile
    if _profile is None or time.monotonic() - _profile[2] > SECRET_TTL_S:
        profile = json.loads(secrets.get_secret_value(SecretId=SECRET_ID)["SecretString"])
        context = ssl.create_default_context(cadata=profile.get("ca_pem"))
        with tempfile.TemporaryDirectory() as scratch:  # ssl loads a client certificate from files only
            cert, key = os.path.join(scratch, "cert.pem"), os.path.join(scratch, "key.pem")
            with open(cert, "w") as f:
                f.write(profile["certificate_pem"])
            with open(key, "w") as f:
                f.write(profile["private_key_pem"])
            context.load_cert_chain(cert, key)
        _profile = (profile, context, time.monotonic())
    return _profile[0], _profile[1]


def publish(thing, payload):
    profile, context = claim_thing()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=profile["client_id"])
    client.tls_set_context(context)
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    client.connect(profile["staging_endpoint"], int(profile.get("port", 8883)), keepalive=30)
    try:
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise TimeoutError("no CONNACK")
            client.loop(timeout=0.05)
        message = client.publish(f"{thing}/expresslink_config", payload, qos=1)
        while not message.is_published():
            if time.monotonic() > deadline or not client.is_connected():
                raise TimeoutError("no PUBACK")
            client.loop(timeout=0.05)
    finally:
        client.disconnect()


def answer(status, body):
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def handler(event, _context):
    try:
        user = event["requestContext"]["authorizer"]["claims"]["sub"]
        thing = json.loads(event.get("body") or "{}")["code"]
    except (KeyError, TypeError, ValueError):
        return answer(400, {"error": {"code": "invalid_request"}})
    now = int(time.time() * 1000)
    claim_id = str(uuid.uuid4())
    claim = {
        "pk": {"S": f"CLAIM#{claim_id}"}, "sk": {"S": "#CLAIM"}, "entity": {"S": "claim"},
        "claim_id": {"S": claim_id}, "thing_name": {"S": thing}, "user_id": {"S": user},
        "vendor": {"S": VENDOR}, "state": {"S": "pending"}, "target_endpoint": {"S": OEM_ENDPOINT},
        "created_at": {"N": str(now)}, "updated_at": {"N": str(now)},
        "expires_at": {"N": str(now + CLAIM_DEADLINE_MS)}, "version": {"N": "1"},
        "history": {"L": [{"M": {"state": {"S": "pending"}, "at": {"N": str(now)}}}]},
        "gsi1pk": {"S": f"USER#{user}"}, "gsi1sk": {"S": f"CLAIM#{now:013}#{claim_id}"},
        "gsi2pk": {"S": "STATE#pending"}, "gsi2sk": {"S": f"{now + CLAIM_DEADLINE_MS:013}#{claim_id}"},
    }
    try:
        dynamodb.transact_write_items(TransactItems=[
            {"Update": {
                "TableName": TABLE,
                "Key": {"pk": {"S": f"DEVICE#{thing}"}, "sk": {"S": "#DEVICE"}},
                "UpdateExpression": "SET holder_kind = :reserved, holder_claim_id = :claim, holder_user = :user, "
                                    "holder_until = :until, last_claim_id = :claim, gsi1pk = :user_pk, "
                                    "gsi1sk = :device ADD version :one",
                "ConditionExpression": "holder_kind = :free AND disabled = :no AND vendor = :vendor",
                "ExpressionAttributeValues": {
                    ":reserved": {"S": "reserved"}, ":claim": {"S": claim_id}, ":user": {"S": user},
                    ":until": {"N": str(now + CLAIM_DEADLINE_MS)}, ":user_pk": {"S": f"USER#{user}"},
                    ":device": {"S": f"DEVICE#{thing}"}, ":one": {"N": "1"}, ":free": {"S": "free"},
                    ":no": {"BOOL": False}, ":vendor": {"S": VENDOR},
                },
            }},
            {"Put": {"TableName": TABLE, "Item": claim, "ConditionExpression": "attribute_not_exists(pk)"}},
        ])
    except dynamodb.exceptions.TransactionCanceledException:
        return answer(409, {"error": {"code": "not_claimable"}})
    state = "pending"
    try:
        publish(thing, json.dumps({"Endpoint": OEM_ENDPOINT}, separators=(",", ":")))
        state = "endpoint_published"
    except (OSError, TimeoutError, ValueError, KeyError) as error:
        print(json.dumps({"event": "publish_failed", "thing": thing, "error": str(error)}))
    if state == "endpoint_published":
        published = str(int(time.time() * 1000))
        dynamodb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": f"CLAIM#{claim_id}"}, "sk": {"S": "#CLAIM"}},
            UpdateExpression="SET #state = :state, updated_at = :at, gsi2pk = :state_pk, "
                             "history = list_append(history, :change) ADD version :one",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":state": {"S": state}, ":at": {"N": published}, ":state_pk": {"S": f"STATE#{state}"},
                ":change": {"L": [{"M": {"state": {"S": state}, "at": {"N": published}}}]}, ":one": {"N": "1"},
            },
        )
    return answer(202, {"claim_id": claim_id, "thing_name": thing, "state": state})
