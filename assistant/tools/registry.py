"""Every tool, registered once; the order is the one the support prompt lists them in."""

from __future__ import annotations

from typing import Final

from assistant.tools import check_answer, create_ticket, handoff_to_human, lookup_order, search_kb
from assistant.tools.base import Tool

TOOLS: Final[dict[str, Tool]] = {
    tool.name: tool
    for tool in (
        lookup_order.TOOL,
        search_kb.TOOL,
        create_ticket.TOOL,
        handoff_to_human.TOOL,
        check_answer.TOOL,
    )
}


def tools_for(channel: str) -> tuple[Tool, ...]:
    """The tools a conversation on ``channel`` may call, in registry order."""
    return tuple(tool for tool in TOOLS.values() if channel in tool.channels)


def tool_labels() -> dict[str, str]:
    """What the pages show while each tool runs, by tool name."""
    return {tool.name: tool.label for tool in TOOLS.values()}
