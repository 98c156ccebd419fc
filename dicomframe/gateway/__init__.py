"""Network services in front of the de-identification pipeline.

Studies pushed to them are de-identified on arrival. Each service is a module of its own, with its own optional dependencies (extras),
imported only by the command that runs it:

* :mod:`dicomframe.gateway.http` is the HTTP gateway (extra ``serve``: FastAPI and
  uvicorn), run by ``dicomframe serve``;
* :mod:`dicomframe.gateway.scp` is a DICOM Storage SCP (C-STORE and C-ECHO; extra
  ``net``: pynetdicom), run by ``dicomframe receive``.

Importing this package loads none of them.
"""
