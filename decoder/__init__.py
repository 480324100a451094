"""meterpipe.decoder: frames from every reader in, named readings out.

One frame's way through, per meter (:class:`~meterpipe.decoder.session.MeterDecoder`)::

    common.link (HDLC / M-Bus frame) --> reassembly (segments, GBT blocks) --> security (AES-GCM)
        --> apdu.notification_header --> mapper.PushMapper.map(body bytes) --> Push

* :mod:`~meterpipe.decoder.mapper`: one per meter; knows the meter's push lists
  by their bytes and parses only the values of a known one, else decodes the
  whole body (:mod:`~meterpipe.decoder.axdr`, or gurux-dlms through
  :mod:`~meterpipe.decoder.gurux_adapter` for what axdr does not read);
* :mod:`~meterpipe.decoder.mapping`: decoded values -> readings, one set of
  rules for every layout (push list, OBIS-tagged, value-only), with names and
  units from :mod:`~meterpipe.decoder.obis` and per-model scalers and
  positional tables from :mod:`~meterpipe.decoder.models` (pure data);
* :mod:`~meterpipe.decoder.dsmr`: DSMR P1 telegrams (text: no mapper needed);
* :mod:`~meterpipe.decoder.cli`: ``meterpipe decode``, the same session on a pasted capture;
* :mod:`~meterpipe.decoder.probe`: the settings page's "Test this meter": the reader's framer
  and the same session on one port's bytes, counted per stage (``web/probe_run.py`` listens);
* :mod:`~meterpipe.decoder.service` and :mod:`~meterpipe.decoder.main`: the
  process: PULL frames, PUB readings and :mod:`~meterpipe.decoder.status`,
  answer :mod:`~meterpipe.decoder.replay` requests.

Everything but service and main is sans-IO.
"""
