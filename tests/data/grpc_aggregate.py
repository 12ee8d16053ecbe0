"""A standard gRPC client (Python grpcio) that learns the collector's
messages through server reflection and calls kiroku.v1.Query/Aggregate,
with no generated code of ours.

usage: grpc_aggregate.py HOST:PORT CA CERT KEY REQUEST_JSON...
Each REQUEST_JSON is an AggregateRequest in the protobuf JSON mapping
(e.g. {"filter": {"sender": "a@b"}, "by": "recipient-domain"}).
prints one JSON array, per request either {"response": {...}} (the
AggregateResponse in the JSON mapping, every field present) or
{"error": "INVALID_ARGUMENT", "details": "..."}.
"""
import json
import sys

import grpc
from google.protobuf import json_format

from grpc_reflect import connect


def main():
    target, ca, cert, key = sys.argv[1:5]
    ch, cls = connect(target, ca, cert, key)
    req_cls = cls("AggregateRequest")
    resp_cls = cls("AggregateResponse")

    aggregate = ch.unary_unary(
        "/kiroku.v1.Query/Aggregate",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=resp_cls.FromString,
    )
    out = []
    for text in sys.argv[5:]:
        req = json_format.Parse(text, req_cls())
        try:
            r = aggregate(req, timeout=20)
            out.append({"response": json_format.MessageToDict(
                r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)})
        except grpc.RpcError as e:
            out.append({"error": e.code().name, "details": e.details()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
