"""Python stubs generated from proto/m2m.proto; do not edit by hand.

Regenerate with ``scripts/gen_proto.sh`` (runs ``python -m grpc_tools.protoc -Iproto
--python_out --pyi_out --grpc_python_out`` into this folder and makes the import
relative). ``m2m_pb2`` needs protobuf >= the "Protobuf Python Version" in its header.
The server and clients use only ``m2m_pb2`` (messages); ``m2m_pb2_grpc`` is there for
other Python callers that want the generated stub class.
"""
