"""Helpers shared by the reward functions."""

from __future__ import annotations


def completion_text(completion) -> str:
    """The text of a TRL completion: a string (plain prompts) or a list of messages (conversational prompts).

    For messages, the contents of the assistant turns are joined (there is normally exactly one).
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    parts = []
    for message in completion or []:
        if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
            content = message.get("content", "")
            if isinstance(content, list):  # multimodal-style content blocks
                content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
            parts.append(str(content))
    return "\n".join(parts)
