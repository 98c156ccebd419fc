"""TLS for the receiver (DICOM over TLS, PS3.15 Annex B) and the HTTP gateway.

A site that sends studies across a network it does not own wants them encrypted on
the wire, and often wants to know who sends: :func:`server_context` makes the server
side of both, from PEM files:

* ``cert`` and ``key``: the server's certificate (chain) and private key;
* ``ca`` (optional): the certificate(s) of the authority that signs the senders'
  certificates. With it, a client without a certificate that authority signed is
  refused during the handshake (mutual TLS), before any DICOM or HTTP is read.

The receiver's context accepts TLS 1.2 or later (BCP 195, which the DICOM TLS profiles
follow). The gateway gives the files to uvicorn, which makes its own context: its oldest
version is the system OpenSSL's (TLS 1.2 on current Debian); :func:`server_context`
only checks the files for it.
Every file problem is a :class:`~dicomframe.errors.UserInputError` that names the
option and what to do, raised before the server listens.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError

__all__ = ["TlsFiles", "server_context"]


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of a TLS server: certificate, private key, and the senders' CA (optional)."""

    cert: str
    key: str
    ca: str | None = None

    @classmethod
    def of(
        cls,
        cert: str | os.PathLike[str] | None,
        key: str | os.PathLike[str] | None,
        ca: str | os.PathLike[str] | None = None,
    ) -> TlsFiles | None:
        """The files given, or None when TLS is off; half a pair (or a CA alone) is refused."""
        if cert is None and key is None:
            if ca is not None:
                raise UserInputError("--tls-ca needs --tls-cert and --tls-key: a CA alone turns no TLS on")
            return None
        if cert is None or key is None:
            raise UserInputError("TLS needs both --tls-cert (the server's certificate) and --tls-key (its private key)")
        return cls(os.fspath(cert), os.fspath(key), None if ca is None else os.fspath(ca))

    @property
    def mutual(self) -> bool:
        """Whether senders must present a certificate the CA signed."""
        return self.ca is not None


class _HandshakeLater(ssl.SSLContext):
    """A context whose sockets do their handshake at their first read or write, not when wrapped.

    pynetdicom wraps each accepted socket in its one accepting loop: a handshake there
    would let one client that connects and says nothing hold every other sender back.
    Deferred, the handshake runs in the association's own thread, where pynetdicom's
    network timeout ends a silent connection.
    """

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


def server_context(files: TlsFiles, handshake_on_accept: bool = True) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or later) from ``files``.

    ``handshake_on_accept=False``: sockets it wraps defer their handshake to their first
    read (see :class:`_HandshakeLater`), for servers that wrap in their accepting loop.

    Examples
    --------
    >>> server_context(TlsFiles("missing.pem", "missing.key"))
    Traceback (most recent call last):
    ...
    dicomframe.errors.UserInputError: --tls-cert: no such file 'missing.pem'
    """
    for option, path in (("--tls-cert", files.cert), ("--tls-key", files.key), ("--tls-ca", files.ca)):
        if path is not None and not os.path.isfile(path):
            raise UserInputError(f"{option}: no such file {path!r}")
    context = (ssl.SSLContext if handshake_on_accept else _HandshakeLater)(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        raise UserInputError(
            f"--tls-cert/--tls-key: not a certificate and its private key in PEM ({exc.reason or 'unreadable'}); "
            "check that the key belongs to the certificate and is not protected by a passphrase"
        ) from None
    except OSError as exc:
        raise UserInputError(f"--tls-cert/--tls-key: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if files.ca is not None:
        try:
            context.load_verify_locations(cafile=files.ca)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise UserInputError(f"--tls-ca: not a PEM certificate file ({reason})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context
