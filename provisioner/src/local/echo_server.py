# The "internet" echo server of Causeway's local exit-node deployment and
# end-to-end tests: answers every GET with the caller's address (IPv4
# callers without the ::ffff: prefix) and appends that address to a log.
# Usage: python3 echo_server.py CALLERS_LOG PORT
import http.server, socket, sys
log = open(sys.argv[1], "a", buffering=1)
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        caller = self.client_address[0].removeprefix("::ffff:")
        log.write(caller + "\n")
        body = caller.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
DualStack(("::", int(sys.argv[2])), Echo).serve_forever()
