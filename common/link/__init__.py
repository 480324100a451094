"""meterpipe.common.link: the link-layer frame formats, written once.

Bytes from a serial line become link-layer frames here, for every process that
needs them without any of them importing another's package:

* :mod:`~meterpipe.common.link.frames`: HDLC type 3 and wired M-Bus long frames
  (:class:`~meterpipe.common.link.frames.Framer`, sans-IO: feed bytes, take
  frames or NEED_DATA) and the parse of one whole frame;
* :mod:`~meterpipe.common.link.p1`: DSMR P1 telegrams (``/ ... !CRC``), cut and
  CRC-checked, never parsed here;
* :mod:`~meterpipe.common.link.cutter`: the cutter for a configured link
  (what a reader runs on its port, and the decoder on the frames it receives);
* :mod:`~meterpipe.common.link.crc`: CRC-16/X.25, CRC-16/ARC, the M-Bus sum;
* :mod:`~meterpipe.common.link.build`: the inverse (HDLC and M-Bus frames from
  payloads), for the simulator and the tests.

The reader cuts frames and forwards their raw bytes; the decoder cuts and
parses them again; the simulator builds them.
"""
