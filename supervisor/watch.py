"""Watch the machine's X position; home it once each time it leaves the range."""

from __future__ import annotations

from flask import current_app

from flask_openfactory import AssetBlueprint, ConditionAttribute, Record, current_openfactory

watch = AssetBlueprint("watch", __name__)

x_range = watch.attribute(ConditionAttribute("position_x_range", tag="Normal", default="in range"))


def machine_uuid() -> str:
    return str(current_app.config["SUPERVISOR_MACHINE_UUID"])


@watch.subscribe(machine_uuid, attribute="position_x")
def check_position(record: Record) -> None:
    """Updates arrive at least once: the Condition remembers that this excursion was handled."""
    if isinstance(record.value, bool) or not isinstance(record.value, (int, float)):
        return  # UNAVAILABLE: the machine is away, not out of range
    low, high = current_app.config["SUPERVISOR_X_MIN"], current_app.config["SUPERVISOR_X_MAX"]
    handled = x_range.record is not None and x_range.record.tag == "Fault"
    if low <= record.value <= high:
        if handled:
            x_range.set("in range", level="Normal")
        return
    if handled:
        return
    x_range.set(f"position_x {record.value:g} is outside [{low:g}, {high:g}]", level="Fault")
    correlation_id, _ = current_openfactory.send_command(machine_uuid(), "home")
    current_app.logger.warning("position_x %g out of range: sent home() (%s)", record.value, correlation_id)
