"""meterpipe.simulator: fake meters for the demo, the tests and the benchmarks.

A simulated meter is not a reader; it is what a reader reads. One push, given
the meter time by the caller::

    models (push layout, link layer, identity)
      + loadcurve (Sample of W, var, dV, mA; energy registers)  --> registers scaled to the model's exponents
      --> meter: encode_notification (A-XDR from encoding)       --> DataNotification APDU
      --> [decoder.security.encrypt, with a key]                  --> ciphered APDU
      --> meter: encode_frames (GBT from encoding, HDLC from common.link.build)
      --> SimulatedPush (bytes, frames, the values a decoder must report)
      --> sinks: pty / serial port, record file, at each interval  <-- main: ``meterpipe simulate``

* :mod:`~meterpipe.simulator.models`: the model tables: objects in push
  order, A-XDR types, scalers, link layer, identity, cadence;
* :mod:`~meterpipe.simulator.loadcurve`: the values: a household load curve
  and the energy registers it feeds (seeded, reproducible);
* :mod:`~meterpipe.simulator.encoding`: the bytes of A-XDR values, the
  DataNotification APDU and general-block-transfer blocks;
* :mod:`~meterpipe.simulator.meter`: the sans-IO meter
  (:class:`~meterpipe.simulator.meter.MeterSimulator`: time in, push out) and
  the replay of a capture;
* :mod:`~meterpipe.simulator.sinks`: the I/O: pty, serial port, record file,
  and the clock that paces the pushes;
* :mod:`~meterpipe.simulator.main`: ``meterpipe simulate``: the command line.
"""
