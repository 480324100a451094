"""Helpers for the MQTT tests: a paho collector, an in-thread publisher, a throwaway CA."""

from __future__ import annotations

import datetime
import ipaddress
import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from meterpipe.common.config import Config
from meterpipe.common.endpoints import EndpointsConfig
from meterpipe.common.publisher_config import MqttConfig, PublishersConfig
from meterpipe.publishers.mqtt.main import build
from meterpipe.publishers.subscriber import serve


class Collector:
    """A paho subscriber recording every message (QoS 1, optionally a persistent session)."""

    def __init__(self, port: int, *, client_id: str = "", ca_file: Path | None = None,
                 topics: tuple[str, ...] = ("meterpipe/#", "homeassistant/#", "smartmeter/#")) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.topics = topics
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not client_id)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def seqs(self, meter: str = "house") -> list[int]:
        return [int(json.loads(p)["seq"]) for p in self.payloads(f"meterpipe/{meter}/json")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ThreadPublisher:
    """meterpipe-mqtt's serve() in a thread (the spool is opened in that thread)."""

    def __init__(self, readings: str, mqtt_cfg: MqttConfig) -> None:
        self.config = Config(meters=(), endpoints=EndpointsConfig(frames=readings + "-frames", readings=readings),
                             publishers=PublishersConfig(mqtt=mqtt_cfg))
        self.stop = threading.Event()
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.rc = serve(self.config, "meterpipe-mqtt", "mqtt", build, self.stop.is_set)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def make_ca(workdir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1: (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meterpipe test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    workdir.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path
