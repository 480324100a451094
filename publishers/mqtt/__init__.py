"""meterpipe.publishers.mqtt: readings to an MQTT broker, with Home Assistant discovery.

One push on its way::

    ReadingsMessage --layout--> OutMessages (meterpipe topics, or the smartmeter-datacollector layout)
        (+ discovery: one retained config per reading, the first time a meter sends it)
        --spool--> on-disk sqlite queue (survives a broker outage and a restart)
        --link--> paho-mqtt (QoS, TLS, username/password, reconnect with backoff) --> broker

* :mod:`~meterpipe.publishers.mqtt.layout`: topics and payloads of a push;
* :mod:`~meterpipe.publishers.mqtt.discovery`: Home Assistant discovery configs;
* :mod:`~meterpipe.publishers.mqtt.spool`: the on-disk queue and its cursor
  (what the decoder replays after a restart);
* :mod:`~meterpipe.publishers.mqtt.link`: the broker connection;
* :mod:`~meterpipe.publishers.mqtt.main`: ``meterpipe-mqtt``.
"""
