"""meterpipe.simulator: fake meters for the demo, the tests and the benchmarks.

A simulated meter is not a reader; it is what a reader reads::

    models (push layouts, load curves) --> encoding (A-XDR, APDU, GBT) --> common.link.build (HDLC / M-Bus)
        --> [ciphering: decoder.security] --> main: written to a pty or serial port at each interval

* :mod:`~meterpipe.simulator.models`: the meter models (registers, scalers,
  push object lists, framing) and the values they push;
* :mod:`~meterpipe.simulator.encoding`: the bytes of A-XDR values, the
  DataNotification APDU and general-block-transfer blocks;
* :mod:`~meterpipe.simulator.main`: ``meterpipe simulate``: the pty and the clock.
"""
