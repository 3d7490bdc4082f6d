#!/usr/bin/env python3
"""A webhook receiver for k8s-job-worker callbacks (Python standard library only).

Prints one line per callback on stdout:

    07:31:02.118  msg-1  0 created   {"jobId": "...", "jobName": "bb-4f1c0e2a9b"}

and answers 200. With WEBHOOK_SIGNING_SECRET=whsec_... (the worker's secret) it
verifies the Standard Webhooks headers (webhook-id, webhook-timestamp,
webhook-signature: HMAC-SHA256 over "<id>.<timestamp>.<body>", timestamp within
5 minutes) and answers 401 to a callback that fails, which the worker retries.

    example/webhook-receiver.py [PORT]      (default 9000; 0 picks a free port)
    HOST=0.0.0.0 example/webhook-receiver.py 9000

The address it listens on is printed on stderr ("listening on http://...").
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATUS = {0: "created", 1: "running", 2: "complete", 3: "failed", 99: "exception"}
TOLERANCE = 5 * 60


def signing_key():
    secret = os.environ.get("WEBHOOK_SIGNING_SECRET", "").strip()
    if not secret:
        return None
    if not secret.startswith("whsec_"):
        sys.exit("WEBHOOK_SIGNING_SECRET must start with whsec_")
    try:
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    except ValueError:
        sys.exit("WEBHOOK_SIGNING_SECRET is not base64 after whsec_")


KEY = signing_key()


def verify(headers, body):
    """None when the Standard Webhooks signature is valid, else why not."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not (msg_id and ts and sigs):
        return "missing webhook-id/-timestamp/-signature header"
    try:
        ts_n = int(ts)
    except ValueError:
        return "bad webhook-timestamp %r" % ts
    if abs(time.time() - ts_n) > TOLERANCE:
        return "webhook-timestamp %s is more than %d s away" % (ts, TOLERANCE)
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    for sig in sigs.split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return None
    return "no matching v1 signature"


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        now = time.strftime("%H:%M:%S", time.localtime()) + ".%03d" % (time.time() % 1 * 1000)
        if KEY is not None:
            why = verify(self.headers, body)
            if why:
                out("%s  REJECTED %s %s: %s" % (now, self.command, self.path, why))
                return self.answer(401, {"error": why})
        try:
            cb = json.loads(body)
            status = cb.get("status")
            detail = json.dumps(cb.get("detail"), separators=(", ", ": "), sort_keys=True)
            signed = "  (signature ok)" if KEY is not None else ""
            out("%s  %-36s  %s %-9s %s%s" % (now, cb.get("id"), status,
                                            STATUS.get(status, "?"), detail, signed))
        except (ValueError, AttributeError):
            out("%s  (not a callback) %s %r" % (now, self.path, body[:200]))
        self.answer(200, {})

    def answer(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args):  # keep stdout for callbacks only
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "9000"))
    host = os.environ.get("HOST", "127.0.0.1")
    srv = ThreadingHTTPServer((host, port), Handler)
    sys.stderr.write("listening on http://%s:%d%s\n" % (
        host, srv.server_address[1],
        " (verifying signatures)" if KEY is not None else ""))
    sys.stderr.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
