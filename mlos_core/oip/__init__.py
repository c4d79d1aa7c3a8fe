"""The Open Inference Protocol (KServe v2, with the Triton extensions its clients use), below its
transports: what HTTP (``mlos_core.http.v2_*``) and gRPC (``mlos_core.grpc``) both answer is
decided here, once, over the one ``DataPlane``.

- ``names``: model names and versions as the protocol speaks them, and its error wording;
- ``params``: request-level parameters (priority, timeout, sequences);
- ``model_config``: the model configuration in Triton's form, and the overrides a load may carry;
- ``repository``: server and model metadata, readiness, statistics, the repository index, load/unload.
"""
