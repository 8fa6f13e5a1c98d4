"""An OTLP/HTTP trace receiver for the tests: decodes each export with the official
opentelemetry-proto definitions and prints every span as one JSON line on stdout.

The first line printed is the port it listens on (127.0.0.1, chosen by the system). Requests
must be POST /v1/traces with Content-Type application/x-protobuf, as OTLP/HTTP says; anything
else is answered 400 and printed as {"error": ...} so that a test sees it.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        problem = None
        if self.path != "/v1/traces":
            problem = "path %s" % self.path
        elif self.headers.get("Content-Type") != "application/x-protobuf":
            problem = "content-type %s" % self.headers.get("Content-Type")
        req = ExportTraceServiceRequest()
        if problem is None:
            try:
                req.ParseFromString(body)
            except DecodeError as e:
                problem = "decode: %s" % e
        if problem is not None:
            emit({"error": problem})
            self.send_response(400)
            self.end_headers()
            return
        for rs in req.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    emit({
                        "resource": resource,
                        "scope": ss.scope.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": s.kind,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "status": {"code": s.status.code, "message": s.status.message},
                        "attributes": attributes(s.attributes),
                        "events": [
                            {"name": e.name, "time": e.time_unix_nano,
                             "attributes": attributes(e.attributes)}
                            for e in s.events
                        ],
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    })
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
emit(server.server_address[1])
server.serve_forever()
