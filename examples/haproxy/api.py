# A tiny HTTP service: answers with the replica that served the request.
import http.server
import os

REPLICA = os.environ.get("CORRAL_REPLICA", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"replica {REPLICA}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
