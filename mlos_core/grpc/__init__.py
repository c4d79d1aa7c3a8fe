"""The Open Inference Protocol over gRPC: KServe's ``GRPCInferenceService`` with the Triton
extensions that ``tritonclient.grpc`` calls (``docs/grpc.md``). ``protocol`` compiles the
vendored-by-hand ``.proto`` files, ``tensors`` converts tensors, ``servicer`` answers each call
through the data plane, ``server`` binds it."""
