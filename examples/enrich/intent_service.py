#!/usr/bin/env python3
"""A stand-in intent service for the enrich example (standard library only).

POST /v1/intent/<lead_id> with {"message": "..."} answers {"type": "buy"|"browse", "lead_id": ...}:
"buy" when the message mentions price, pricing, buy, quote or demo. Listens on 127.0.0.1:18081
(or the port given as the first argument).
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUY_WORDS = ("price", "pricing", "buy", "quote", "demo")


class Intent(BaseHTTPRequestHandler):
    def do_POST(self):
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[:2] != ["v1", "intent"]:
            self.send_error(404, "POST /v1/intent/<lead_id>")
            return
        length = int(self.headers.get("content-length") or 0)
        try:
            message = str(json.loads(self.rfile.read(length) or b"{}").get("message", ""))
        except ValueError:
            self.send_error(400, "body is not JSON")
            return
        kind = "buy" if any(w in message.lower() for w in BUY_WORDS) else "browse"
        body = json.dumps({"type": kind, "lead_id": parts[2]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 18081
    ThreadingHTTPServer(("127.0.0.1", port), Intent).serve_forever()
