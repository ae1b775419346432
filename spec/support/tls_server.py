"""A loopback HTTPS server for spec/errors_spec.lua's TLS checks.

    python3 tls_server.py CERT KEY PARENT_PID

Prints "port N" once listening on 127.0.0.1 (a free port), answers every POST
with a BeeOS-style JSON reply, and exits when PARENT_PID is gone.
"""
import http.server
import json
import os
import ssl
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps({"message_id": "msg_tls", "in_reply_to": "k",
                           "context_id": "ctx_tls", "content": "tls ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def watch(parent):
    while True:
        try:
            os.kill(parent, 0)
        except OSError:
            os._exit(0)
        time.sleep(0.5)


def main():
    cert, key, parent = sys.argv[1], sys.argv[2], int(sys.argv[3])
    threading.Thread(target=watch, args=(parent,), daemon=True).start()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("port", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
