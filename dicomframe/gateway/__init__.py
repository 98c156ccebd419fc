"""Network services in front of the de-identification pipeline.

Each service is a module of its own, with its own optional dependencies (extras),
imported only by the command that runs it: :mod:`dicomframe.gateway.http` is the
HTTP gateway (extra ``serve``: FastAPI and uvicorn), run by ``dicomframe serve``.
Importing this package loads none of them.
"""
