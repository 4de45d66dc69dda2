#!/usr/bin/env python3
"""A minimal OTLP/HTTP sink for benchmarks: accepts POST /v1/traces, counts requests and bytes,
answers 200 with an empty (valid) protobuf response. Not a collector: it only lets the exporter
do its whole job (encode, batch, send) so that its cost can be measured.

    python3 benches/otlp_sink.py 4318   # then OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
"""
import http.server
import signal
import sys

stats = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        stats["requests"] += 1
        stats["bytes"] += n
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink)
    # SIGTERM (and SIGINT, which a background job ignores) print the counts and stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        print(f"otlp_sink: {stats['requests']} requests, {stats['bytes']} bytes", file=sys.stderr)
