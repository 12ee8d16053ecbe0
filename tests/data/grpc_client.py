"""A standard gRPC client (Python grpcio) that discovers the collector's
services through server reflection, checks gRPC health, and calls
kiroku.v1.Query/Search with no generated code of ours.

usage: grpc_client.py HOST:PORT CA CERT KEY
prints one JSON object: services, health, search_total
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
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
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    services = sorted(s.name for s in resp.list_services_response.service)

    pool = descriptor_pool.DescriptorPool()
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="kiroku.v1.Query")])))
    protos = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in resp.file_descriptor_response.file_descriptor_proto]
    for p in protos:
        pool.Add(p)
    req_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("kiroku.v1.SearchRequest"))
    resp_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("kiroku.v1.SearchResponse"))

    health = health_pb2_grpc.HealthStub(ch)
    status = health.Check(health_pb2.HealthCheckRequest(service="kiroku.v1.Query")).status

    search = ch.unary_unary(
        "/kiroku.v1.Query/Search",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=resp_cls.FromString,
    )
    result = search(req_cls(page_size=10), timeout=20)
    print(json.dumps({
        "services": services,
        "health": health_pb2.HealthCheckResponse.ServingStatus.Name(status),
        "search_total": result.total_hits,
    }))


if __name__ == "__main__":
    main()
