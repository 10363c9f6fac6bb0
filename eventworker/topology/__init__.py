"""The broker objects eventworker needs: names and a declaration plan (pure), declaring it,
topic matching as RabbitMQ does it, and the drift between the plan and a live broker."""
