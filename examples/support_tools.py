"""The support agent's Python tool (examples/agents.toml): an async function the
tool runtime calls with the LLM's arguments; what it returns is the tool result."""

from __future__ import annotations

ORDERS = {"1001": "shipped on Monday", "1002": "waiting for stock"}


async def lookup_order(order_id: str) -> dict[str, str]:
    """Look an order up by its number."""
    status = ORDERS.get(order_id.strip())
    if status is None:
        return {"order_id": order_id, "status": "not found"}
    return {"order_id": order_id, "status": status}
