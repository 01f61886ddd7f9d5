"""The machine's attributes and methods, in a blueprint like any other module."""

from __future__ import annotations

from typing import Annotated

from flask_openfactory import AssetBlueprint, EventAttribute, SampleAttribute

machine = AssetBlueprint("machine", __name__)

position_x = machine.attribute(SampleAttribute("position_x", tag="Position.X", default=0.0))
position_y = machine.attribute(SampleAttribute("position_y", tag="Position.Y", default=0.0))
status = machine.attribute(EventAttribute("status", tag="Execution", default="READY"))


@machine.ofa_method(param_description={"speed": "feed rate in mm/min"})
def move_axis(
    x: Annotated[float, "target X position in mm"],
    y: Annotated[float, "target Y position in mm"],
    speed: int = 100,
) -> dict[str, float]:
    """Move both axes to an absolute position."""
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    status.set("ACTIVE")
    position_x.set(float(x))
    position_y.set(float(y))
    status.set("READY")
    return {"x": float(x), "y": float(y), "speed": speed}


@machine.ofa_method()
def home() -> dict[str, float]:
    """Return both axes to the origin."""
    return move_axis(0.0, 0.0)
