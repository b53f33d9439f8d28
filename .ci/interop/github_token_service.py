"""GitHub Actions' OIDC token service, on loopback, for running the example workflow's script:
GET ?audience=AUD with `Authorization: Bearer REQUEST_TOKEN` answers {"value": JWT}, the JWT
issued by oauth2-mock-server with the GitHub Actions claim set.

usage: github_token_service.py PORT ISSUER_URL REQUEST_TOKEN
"""

import json
import sys
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

port, issuer, request_token = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {request_token}":
            self.send_response(401)
            self.end_headers()
            return
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        audience = query.get("audience", ["?"])[0]
        form = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "scope": "github-actions", "aud": audience}
        ).encode()
        with urllib.request.urlopen(f"{issuer}/token", data=form) as r:
            token = json.load(r)["access_token"]
        body = json.dumps({"count": 1, "value": token}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print(f"http://127.0.0.1:{port}/token?api-version=2.0", flush=True)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
