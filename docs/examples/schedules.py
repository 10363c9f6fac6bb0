"""Periodic events declared in a plugin module: the hourly report, and a probe every 30 s."""

from eventworker import Context, Event, handler, schedule

hourly = schedule("0 * * * *", "reports.hourly", data={"kind": "sales"}, timezone="Europe/Berlin")


@schedule("*/30 * * * * *", "health.probe", name="probe", catch_up="none")
@handler("health.probe")
async def probe(event: Event[None], ctx: Context) -> None:
    ctx.logger.info("probe at {}", event.time)
