"""The AMQP layer below every wing: connecting to RabbitMQ, with connection failures turned into
eventworker errors. Internal to eventworker, like every wing: the public API is ``eventworker``,
``eventworker.testing`` and ``eventworker.outbox``."""
