"""The AMQP 0-9-1 layer below every wing: connecting to RabbitMQ, and what comes off the wire
and what goes onto it.

aiormq decodes frames with pamqp, which raises on input a broker happily relays (a timestamp
in microseconds, a short string that is not UTF-8, a table nested 500 deep), and one such
exception ends the whole connection. Here the delivery path (``basic.deliver``,
``basic.get-ok``, ``basic.return``, content headers and bodies) is decoded by eventworker's
own decoder, which never raises on a message: a content header it cannot fully read becomes
an :class:`~eventworker.amqp.properties.UndecodableProperties` carrying what it could read,
the error and the raw bytes, and that message alone is dead-lettered. Properties eventworker
publishes are encoded without pamqp's 128-byte cut of header names.

- ``connection``: ``connect()``; connection failures become eventworker errors;
- ``properties``: ``Properties`` and ``UndecodableProperties``, decoding and encoding them;
- ``frames``: frame decoding and the ``FrameReceiver`` installed into aiormq;
- ``delivery``: a delivered message as eventworker reads it;
- ``_fields`` / ``_encoding``: field values and tables, off and onto the wire.
"""
