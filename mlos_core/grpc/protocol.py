"""The protocol's messages, compiled when this module is imported from the ``.proto`` files beside
it (``proto/``) with grpcio-tools' protoc, into a descriptor pool of the core's own.

Why not generated ``*_pb2.py`` files: the ``.proto`` stays the one source (nothing generated to
commit or to forget to regenerate), and a pool of our own keeps the protocol's names
(``inference.ModelInferRequest``...) out of protobuf's default pool, where tritonclient's and
KServe's generated modules register the same names from their own, different, files: loading
both into one pool would fail in any process that holds a client beside the server.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO_DIR = Path(__file__).parent / "proto"
PROTO_FILES = ("model_config.proto", "inference.proto")
SERVICE_NAME = "inference.GRPCInferenceService"


def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc  # the compiler, bundled by grpcio-tools

    with tempfile.TemporaryDirectory(prefix="mlos-proto-") as d:
        out = os.path.join(d, "inference.pb")
        rc = protoc.main(["protoc", f"--proto_path={PROTO_DIR}", f"--descriptor_set_out={out}", "--include_imports",
                          *PROTO_FILES])
        if rc != 0:
            raise RuntimeError(f"protoc could not compile {', '.join(PROTO_FILES)} in {PROTO_DIR} (exit {rc})")
        with open(out, "rb") as f:
            return descriptor_pb2.FileDescriptorSet.FromString(f.read())


POOL = descriptor_pool.DescriptorPool()
for _file in _descriptor_set().file:
    POOL.Add(_file)
SERVICE = POOL.FindServiceByName(SERVICE_NAME)


class _Messages:
    """``pb.ModelInferRequest`` etc.: the message classes of the pool, made on first use."""

    def __getattr__(self, name: str):
        cls = message_factory.GetMessageClass(POOL.FindMessageTypeByName("inference." + name))
        setattr(self, name, cls)
        return cls


pb = _Messages()
