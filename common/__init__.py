"""meterpipe.common: what every meterpipe process shares.

The pipeline, one process per box::

    meter --serial--> reader --PUSH--> (frames) --PULL--> decoder --PUB--> (readings) --SUB--> publishers
                                                                                      (mqtt, csv, journal, tap)

1. A **reader** (one per ``[[meters]]`` table) opens its port, cuts the byte
   stream into link-layer frames without decoding them and PUSHes each as a
   :class:`~meterpipe.common.schema.Frame` (meter name, sequence number,
   receive time, link layer, raw bytes) to the ``frames`` endpoint.
2. The **decoder** PULLs frames from all readers, reassembles, decrypts
   (keys from the config), parses the COSEM data and PUBlishes
   ``[b"reading/<meter>", Reading]`` and ``[b"status/<meter>", Status]`` on
   the ``readings`` endpoint.
3. Each **publisher** SUBscribes to ``readings`` and delivers: MQTT, CSV
   files, the systemd journal; ``meterpipe tap`` prints them.

Modules here (the ground floor: nothing in common/ imports a package above it):

* :mod:`~meterpipe.common.config` (+ ``config_fields``, ``publisher_config``):
  the TOML file -> frozen, validated :class:`~meterpipe.common.config.Config`;
  bad settings raise :class:`~meterpipe.common.errors.ConfigError` naming the field.
* :mod:`~meterpipe.common.endpoints`: endpoint defaults (``ipc://`` sockets in a
  private 0700 runtime directory, the demo's own beside it) and validation;
  :mod:`~meterpipe.common.curve` and ``curve_keys``: CurveZMQ for remote readers.
* :mod:`~meterpipe.common.schema`: the wire messages; the only msgpack user.
  :mod:`~meterpipe.common.values`: the exact values they carry (Reading, Push).
* :mod:`~meterpipe.common.link`: the link-layer frame formats (HDLC, M-Bus, P1)
  that the reader, the decoder and the simulator share.
* :mod:`~meterpipe.common.errors`: the one error root and key fingerprints.
* :mod:`~meterpipe.common.process` and :mod:`~meterpipe.common.logs`: the process
  plumbing every ``main()`` uses (base parser, config or exit 2, stop flag, poll
  interval, backoff, exit codes; logging to stdout).

The commands a person types (``meterpipe run``, ``demo``, ``keys``, ...) live in
:mod:`meterpipe.deploy`.
"""
