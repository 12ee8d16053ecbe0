//! Kiroku's protobuf API (package `kiroku.v1`): the generated prost messages
//! and tonic clients/servers, and the encoded descriptor set for gRPC server
//! reflection. This crate owns the `.proto` files and code generation and
//! nothing else.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("kiroku.v1");
}

/// Encoded `FileDescriptorSet` of every Kiroku proto file, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kiroku_descriptor.bin"));

pub use v1::*;
