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
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def main():
    target, ca, cert, key = sys.argv[1:5]
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(ca, "rb").read(),
        private_key=open(key, "rb").read(),
        certificate_chain=open(cert, "rb").read(),
    )
    ch = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")])
    grpc.channel_ready_future(ch).result(timeout=20)

    refl = reflection_pb2_grpc.ServerReflectionStub(ch)
    resp = next(refl.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="kiroku.v1.Query")])))
    pool = descriptor_pool.DescriptorPool()
    for b in resp.file_descriptor_response.file_descriptor_proto:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(b))
    req_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("kiroku.v1.AggregateRequest"))
    resp_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("kiroku.v1.AggregateResponse"))

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
