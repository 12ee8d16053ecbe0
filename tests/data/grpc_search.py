"""Calls kiroku.v1.Query/Search and ExfilReport from Python grpcio with the
message types learned through server reflection (no generated code), for
each request read as JSON from standard input.

usage: grpc_search.py HOST:PORT CA CERT KEY < requests.json
requests.json: a list of {"search": {SearchRequest fields}} or
{"exfil": {ExfilReportRequest fields}}, field names as in kiroku.proto.
prints a JSON list, per request: {"ids": [event ids in order]} or
{"error": "<status code>: <details>"}.
"""
import json
import sys

import grpc
from google.protobuf import json_format

from grpc_reflect import connect


def main():
    target, ca, cert, key = sys.argv[1:5]
    requests = json.load(sys.stdin)
    ch, cls = connect(target, ca, cert, key)

    def call(method, req, resp):
        return ch.unary_unary(
            "/kiroku.v1.Query/" + method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=cls(resp).FromString,
        )

    search = call("Search", "SearchRequest", "SearchResponse")
    exfil = call("ExfilReport", "ExfilReportRequest", "ExfilReport")
    out = []
    for r in requests:
        try:
            if "search" in r:
                req = json_format.ParseDict(r["search"], cls("SearchRequest")())
                res = search(req, timeout=20)
                out.append({"ids": [e.event_id for e in res.events]})
            else:
                req = json_format.ParseDict(r["exfil"], cls("ExfilReportRequest")())
                res = exfil(req, timeout=20)
                out.append({"ids": [f.event_id for f in res.files]})
        except grpc.RpcError as e:
            out.append({"error": "%s: %s" % (e.code().name, e.details())})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
