"""Serving: model servers and the ensemble gateway, speaking the Open Inference Protocol.

- ``protocol``: the KServe V2 REST protocol: reading and checking requests, answers, errors.
- ``binary``: the binary tensor data extension (writing bodies, reading answers).
- ``decoding``: reading requests off the event loop, in bounded memory.
- ``endpoints``: the V2 routes around a served model, request ids, errors.
- ``connections``: deadlines and caps on connections (a uvicorn protocol).
- ``predictor``: the predictor contract and how a model is loaded (by hash, verified).
- ``model_server``: one model behind a V2 endpoint (``create_model_app``, ``serve_model``).
- ``strategies``: how the ensemble combines its members' tags (union, majority, ...).
- ``gateway``: one V2 endpoint in front of several model servers (``create_gateway_app``,
  ``serve_gateway``).
- ``client``: calling V2 servers and reading fanflow's tag outputs.
- ``tagging``: tagging clip files as a user does (``fanflow predict``, the UI's tagging page).
- ``wire``: how clips and tags travel in V2 tensors.
- ``metrics``: Prometheus metrics of a server.
- ``server``: running an app on a loopback socket (blocking until SIGTERM, or in a thread).

Heavy imports stay in the modules that need them, so importing this package is cheap.
"""
