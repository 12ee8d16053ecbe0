"""What the grpcio test clients share: an mTLS channel to the collector and
its message classes learned through server reflection (no generated code)."""
import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def connect(target, ca, cert, key):
    """Returns (channel, cls): cls("SearchRequest") is kiroku.v1's class."""
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

    def cls(name):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName("kiroku.v1." + name))

    return ch, cls
