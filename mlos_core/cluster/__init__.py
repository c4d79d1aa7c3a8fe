"""Serving on a Ray cluster: the same server, its models run by Ray Serve replicas.

Ray Serve's own HTTP entry takes ASGI applications only (serving a non-ASGI server through it
is an open request upstream, ray-project/ray#42882), which leaves two ways to put this server
on a cluster: (a) keep the aiohttp application as the front door and call model deployments
through Ray Serve deployment handles, or (b) rewrite the HTTP layer as a thin Starlette app
behind ``@serve.ingress``. This package takes (a):

- one HTTP layer and one data plane: the front door *is* ``python -m mlos_core``, so every API
  (MLOS, the Open Inference Protocol with binary tensors and shared memory, OpenAI with SSE
  streaming, operations), its middlewares (errors, limits, auth) and its decoding and validation
  stay exactly as on one machine; the cluster is one more ``ModelRunner``
  (``mlos_core.execution``), not a second server to keep in step with the first;
- Ray Serve does what it is good at behind it: placing replicas on nodes, model-aware routing
  (``@serve.multiplexed``), autoscaling on ongoing requests, health checks and replacement;
- the price: Ray's proxies do not balance the front door itself. Front doors hold no state of
  their own (registrations live in the cluster store), so run one per node or several behind
  any TCP load balancer.

Modules: ``frontdoor`` (connection, deployments, status), ``registry`` (the front door's
registry over the cluster store), ``runner`` (requests to replicas, retry on replica loss),
``replica`` (the Ray Serve deployment), ``store`` (registrations and package blobs on the
head), ``packages`` (what travels, verified by sha256), ``wire`` (errors and model keys).

Importing this package imports Ray; the server imports it only when ``--ray-address`` is given.
"""
