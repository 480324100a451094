"""The MQTT connection: paho-mqtt 2.x driven from the publisher's own loop.

No paho network thread: :meth:`MqttLink.tick` (called by the SUB loop after
every poll, and whenever the broker socket is readable) connects when due,
runs ``client.loop(0)``, moves rows from the spool into flight and deletes the
acknowledged ones. Everything happens in one thread, so the spool's sqlite
connection is never shared.

* A fresh paho client per connection attempt: nothing paho queued for an old
  connection is replayed behind our back; the spool is the only queue.
* At most ``WINDOW`` (100) messages in flight, sent in spool order; after a
  reconnect sending restarts at the oldest unacknowledged row, so a push may be
  delivered twice (those in flight when the link broke) but never lost or
  reordered.
* Reconnect with backoff: 1 s doubling to 60 s, reset after a successful
  CONNACK. A failure is logged at ERROR the first time, and quietly (INFO) while
  it repeats; the password never appears in a log line.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from meterpipe.common.errors import ConfigError
from meterpipe.common.process import Backoff
from meterpipe.common.publisher_config import MqttConfig
from meterpipe.publishers.mqtt.spool import Spool

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0

WINDOW = 100
LOGIN_REFUSED = ("MQTT broker refused the login (bad username or password): check "
                 "publishers.mqtt.username/password")
_LOGIN_CODES = frozenset({4, 5, 134, 135})  # 3.1.1 rc 4/5, MQTT 5 "bad user name or password"/"not authorized"


class TrackingContext(ssl.SSLContext):
    """Remembers the last socket it wrapped: paho leaks it when the handshake fails."""

    last: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        self.last = sock
        return sock

    def close_last(self) -> None:
        sock, self.last = self.last, None
        if sock is not None:
            sock.close()


def tls_context(cfg: MqttConfig) -> TrackingContext | None:
    """The TLS context for the broker connection (certificate checks on unless tls_insecure)."""
    if not cfg.tls:
        if cfg.ca_file or cfg.cert_file:
            log.warning("publishers.mqtt.ca_file/cert_file are set but tls = false: connecting without TLS")
        return None
    try:
        ctx = TrackingContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname check + CERT_REQUIRED
        if cfg.ca_file:
            ctx.load_verify_locations(cafile=str(cfg.ca_file))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if cfg.cert_file:
            ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file) if cfg.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("publishers.mqtt.ca_file",
                          f"cannot load the TLS files (ca_file/cert_file/key_file): {exc}") from exc
    if cfg.tls_insecure:
        log.warning("publishers.mqtt.tls_insecure = true: the broker's certificate is NOT checked")
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe_connect_error(cfg: MqttConfig, exc: BaseException) -> str:
    where = f"{cfg.host}:{cfg.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
            return (f"TLS: the certificate of the MQTT broker at {where} does not match the host name "
                    f"({reason}): set publishers.mqtt.host to a name in the certificate")
        ca = f"publishers.mqtt.ca_file ({cfg.ca_file})" if cfg.ca_file else \
            "publishers.mqtt.ca_file (not set: the system CAs were used)"
        return (f"TLS: cannot verify the certificate of the MQTT broker at {where} ({reason}): "
                f"check {ca} names the CA that signed the broker's certificate")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with the MQTT broker at {where} failed ({exc.reason or exc}): is it a TLS port?"
    if isinstance(exc, ConnectionRefusedError):
        return f"MQTT broker at {where} refused the connection (not running, or wrong port?)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"MQTT broker at {where} did not answer (timeout)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve MQTT broker host {cfg.host!r}: {exc.strerror}"
    return f"cannot connect to the MQTT broker at {where}: {exc}"


class MqttLink:
    def __init__(
        self,
        cfg: MqttConfig,
        spool: Spool,
        *,
        availability_topic: str,
        clock: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.availability_topic = availability_topic
        self.clock = clock
        self.tls = tls_context(cfg)
        self.connected = False
        self.attempts = 0
        self.delivered = 0
        self._client: mqtt.Client | None = None
        self._next_attempt = 0.0
        self._backoff = Backoff(initial=1.0, cap=60.0, jitter=0.0)  # one client: no storm to spread
        self._last_error: str | None = None
        self._inflight: dict[int, int] = {}  # mid -> spool row id
        self._last_sent = 0  # highest spool id handed to paho on this connection
        self._acked: list[int] = []
        self._dead: list[mqtt.Client] = []

    # --- paho callbacks (run inside client.loop(), in our thread) ----------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Any) -> None:
        if client is not self._client:
            return
        if rc.is_failure:
            if rc.value in _LOGIN_CODES:
                self._fail(LOGIN_REFUSED)
            else:
                self._fail(f"MQTT broker at {self.cfg.host}:{self.cfg.port} refused the connection: {rc}")
            return
        self.connected = True
        self._backoff.reset()
        self._inflight.clear()
        self._last_sent = 0
        if self._last_error is not None:
            log.info("connected to the MQTT broker at %s:%s again", self.cfg.host, self.cfg.port)
        else:
            log.info("connected to the MQTT broker at %s:%s", self.cfg.host, self.cfg.port)
        self._last_error = None
        client.publish(self.availability_topic, b"online", qos=1, retain=True)
        if len(self.spool):
            log.info("sending %s spooled MQTT message(s)", len(self.spool))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Any) -> None:
        if client is not self._client:
            return
        where = f"{self.cfg.host}:{self.cfg.port}"
        if self.connected:
            self._fail(f"lost the connection to the MQTT broker at {where} ({rc}); "
                       "messages are kept in the spool")
        else:
            self._fail(f"the MQTT broker at {where} closed the connection before accepting it ({rc})")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    properties: Any) -> None:
        row = self._inflight.pop(mid, None)
        if row is not None:
            self._acked.append(row)

    # --- state -------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        self.connected = False
        now = self.clock()
        delay = self._backoff.next_delay()
        self._next_attempt = now + delay
        if message != self._last_error:
            log.error("%s; retrying in %.0f s", message, delay)
        else:
            log.info("MQTT connect attempt %s failed again; retrying in %.0f s", self.attempts, delay)
        self._last_error = message
        self._drop_client()

    def _drop_client(self) -> None:
        """Forget the current client; its socket is closed in tick(), outside paho's callbacks."""
        client, self._client = self._client, None
        self.connected = False
        self._inflight.clear()
        if client is not None:
            self._dead.append(client)

    def _reap(self) -> None:
        for client in self._dead:
            sock = client.socket()
            if sock is not None:
                sock.close()
        self._dead.clear()

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id,
                             clean_session=True, protocol=mqtt.MQTTv311)
        if self.cfg.username:
            client.username_pw_set(self.cfg.username, self.cfg.password)
        if self.tls is not None:
            client.tls_set_context(self.tls)
        client.will_set(self.availability_topic, b"offline", qos=1, retain=True)
        client.max_inflight_messages_set(WINDOW)
        client.max_queued_messages_set(0)
        client.connect_timeout = CONNECT_TIMEOUT_S  # the loop waits this long at most per attempt
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _connect(self) -> None:
        self.attempts += 1
        client = self._new_client()
        self._client = client
        try:
            client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        except (OSError, ssl.SSLError) as exc:
            if self.tls is not None:
                self.tls.close_last()
            self._fail(describe_connect_error(self.cfg, exc))

    # --- driven by the loop --------------------------------------------------------

    def fileno(self) -> int | None:
        client = self._client
        if client is None:
            return None
        sock = client.socket()
        return sock.fileno() if sock is not None else None

    def tick(self) -> None:
        if self._client is None and self.clock() >= self._next_attempt:
            self._connect()
        client = self._client
        if client is not None:
            rc = client.loop(timeout=0)
            if rc != mqtt.MQTT_ERR_SUCCESS and self._client is client:
                self._drop_client()  # paho did not report it through on_disconnect
                self._fail(f"lost the connection to the MQTT broker at {self.cfg.host}:{self.cfg.port} "
                           f"({mqtt.error_string(rc)}); messages are kept in the spool")
        self._reap()
        if self.connected:
            self._fill()
        if self._acked:
            self.delivered += len(self._acked)
            self.spool.delete(self._acked)
            self._acked = []

    def _fill(self) -> None:
        client = self._client
        room = WINDOW - len(self._inflight)
        if client is None or room <= 0:
            return
        for row_id, m in self.spool.batch(self._last_sent, room):
            info = client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            self._last_sent = row_id
            if info.is_published():  # QoS 0 written already: no ack will come
                self._acked.append(row_id)
            else:
                self._inflight[info.mid] = row_id

    def close(self, timeout: float = 1.0) -> None:
        """Say "offline" (retained) and disconnect; what is unsent stays in the spool."""
        client = self._client
        if client is not None and self.connected:
            info = client.publish(self.availability_topic, b"offline", qos=1, retain=True)
            deadline = self.clock() + timeout
            while not info.is_published() and self.clock() < deadline and self._client is client:
                client.loop(timeout=0.05)
            if self._acked:
                self.spool.delete(self._acked)
                self._acked = []
            self._client = None  # a deliberate disconnect: on_disconnect ignores it
            client.disconnect()
            client.loop(timeout=0)
        self._client = None
        self.connected = False
        self._reap()
