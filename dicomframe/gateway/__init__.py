"""Network entry points of dicomframe: studies pushed to it are de-identified on arrival.

:mod:`dicomframe.gateway.scp` is a DICOM Storage SCP (C-STORE and C-ECHO; extra
``net``). Nothing here is imported by ``import dicomframe``: each module loads its
optional dependencies when it is used.
"""
