"""CurveZMQ on the frames socket: readers on other hosts, and who may bind where.

Readers on the decoder's host talk over ``ipc://`` in a 0700 runtime directory
or ``tcp://127.0.0.1``; nobody else can reach those. A reader on another host
connects over ``tcp://`` and must use CurveZMQ: the decoder's PULL socket is a
CURVE server that accepts only clients whose public key sits in
``endpoints.curve_authorized_dir`` (checked by a ZAP authenticator thread), and
the reader's PUSH socket is a CURVE client that knows the server's public key.
Key files are ZeroMQ certificates as ``zmq.auth.create_certificates`` writes
them (``meterpipe keys`` makes them): ``NAME.key`` holds the public key,
``NAME.key_secret`` both keys.

This module holds the decoder's server side (:func:`secure_frames_server` and
its ZAP authenticator); :mod:`meterpipe.common.curve_keys` holds the config
check (``check_security``), the key files and the reader's client side
(``secure_frames_client``). The server side lives apart because its
authenticator (``zmq.auth.thread``) pulls in asyncio: the config and the
readers import ``curve_keys`` only and never load it. Secret keys are read there,
set on sockets and never rendered: messages name the file, never its contents.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from meterpipe.common.curve_keys import authorized_keys, load_key_pair

if TYPE_CHECKING:
    from meterpipe.common.endpoints import EndpointsConfig

log = logging.getLogger(__name__)


class FramesAuthenticator(ThreadAuthenticator):
    """ZAP in a thread; says once per unknown key (a public key, safe to show) that it refused it."""

    def __init__(self, context: zmq.Context[Any], directory: Path) -> None:
        super().__init__(context, log=logging.getLogger("meterpipe.common.curve.zap"))
        self.directory = directory
        self._refused: set[bytes] = set()

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        if not allowed:
            public = z85.encode(client_key)
            if public not in self._refused:
                self._refused.add(public)
                log.warning("frames: refused a reader whose CurveZMQ public key %s is not in %s",
                            public.decode("ascii"), self.directory)
        return allowed, reason


def secure_frames_server(
    ctx: zmq.Context[Any], sock: zmq.Socket[Any], endpoints: EndpointsConfig
) -> FramesAuthenticator | None:
    """Before bind: make ``sock`` a CURVE server when curve_server_secret is set.

    Starts and returns the authenticator (the caller stops it before ``ctx.term()``);
    None when CurveZMQ is not configured.
    """
    secret_path, directory = endpoints.curve_server_secret, endpoints.curve_authorized_dir
    if secret_path is None or directory is None:
        return None
    public, secret = load_key_pair(secret_path, "endpoints.curve_server_secret")
    count = len(authorized_keys(directory, "endpoints.curve_authorized_dir"))
    auth = FramesAuthenticator(ctx, directory)
    auth.start()
    # domain "*" covers sockets without a ZAP_DOMAIN; with the handler running, libzmq
    # asks it about every CURVE client (without one it would let every client in).
    auth.configure_curve(domain="*", location=os.fspath(directory))
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    log.info("frames: CurveZMQ server, %d authorised reader key(s) in %s", count, directory)
    return auth
