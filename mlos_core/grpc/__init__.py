"""The Open Inference Protocol over gRPC: KServe's ``GRPCInferenceService`` with the Triton
extensions that ``tritonclient.grpc`` calls (``docs/grpc.md``). ``protocol`` compiles the core's
own ``.proto`` files of the protocol, ``tensors`` converts tensors onto ``mlos_core.tensors``,
``servicer`` answers each call through the data plane and ``mlos_core.oip``, ``server`` binds it."""
