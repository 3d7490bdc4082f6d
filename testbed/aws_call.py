#!/usr/bin/env python3
"""One boto3 call against the bed's moto, for the Rust test harness.

stdin: {"service", "op", "params", "endpoint", "region", "key", "secret"}
stdout: {"result": <response without ResponseMetadata>}
     or {"error": {"code", "message", "status"}}
Run it with the moto venv's python (boto3).
"""
import json
import re
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def main():
    req = json.load(sys.stdin)
    client = boto3.client(
        req["service"], endpoint_url=req["endpoint"], region_name=req["region"],
        aws_access_key_id=req["key"], aws_secret_access_key=req["secret"],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    try:
        res = getattr(client, req["op"])(**(req.get("params") or {}))
        res.pop("ResponseMetadata", None)
        out = {"result": res}
    except ClientError as e:
        err = e.response.get("Error", {})
        code, msg = err.get("Code", ""), err.get("Message", str(e))
        # With signature checking on, moto answers auth errors in XML even to JSON-protocol
        # clients (SQS): botocore then reports the HTTP status as the code.
        m = re.search(r"<Code>([^<]*)</Code>", msg or "")
        if m:
            code = m.group(1)
            mm = re.search(r"<Message>([^<]*)</Message>", msg)
            msg = mm.group(1) if mm else msg
        out = {"error": {"code": code, "message": msg,
                         "status": e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)}}
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
