"""What the stand-in model server's research models answer (see fusion_testing/standin.py).

    researcher    fetches the URL the question gives (web_fetch), or searches (web_search, else
                  search_documents) and fetches the first page found (web_fetch, when offered); calls
                  an MCP `lookup_code` tool when one is offered; then answers with what the results
                  said (a sentence with a year, or their start), citing every source number they gave
    tool-spinner  calls web_search in every turn it may; asked to answer (tool_choice "none"), says
                  how many results it got
    tool-garbage  calls a tool that does not exist and web_search with arguments that are not JSON,
                  then answers with the errors it got back

Tool results reach it fenced (`<tool-result-NONCE name="…">`); it reads their text between the tags.
"""

import json
import re
from typing import Any

_RESULT = re.compile(r"<tool-result-[0-9a-f]+[^>]*>\n(.*?)\n</tool-result-[0-9a-f]+>", re.DOTALL)
_NUMBER = re.compile(r"^(?:Cite as: )?\[(\d+)\]", re.MULTILINE)
_URL = re.compile(r"https?://[^\s<>\"]+")
_FACT = re.compile(r"[^.\n]*\b(?:19|20)\d\d\b[^.\n]*\.")


def is_research_model(model: str) -> bool:
    return model in ("researcher", "tool-spinner", "tool-garbage")


def turn(model: str, request: dict[str, Any]) -> dict[str, Any]:
    """The assistant message of one turn."""
    messages = request.get("messages") or []
    offered = {(tool.get("function") or {}).get("name") for tool in request.get("tools") or []}
    may_call = bool(offered) and request.get("tool_choice") != "none"
    called = [c["function"]["name"] for m in messages for c in m.get("tool_calls") or []]
    results = [str(m.get("content") or "") for m in messages if m.get("role") == "tool"]
    question = next((str(m["content"]) for m in reversed(messages) if m.get("role") == "user"), "")
    if model == "tool-spinner":
        if may_call:
            return _call("web_search", {"query": f"{question[:80]} {len(called)}"})
        return _say(f"Out of tool calls after {len(results)} results.")
    if model == "tool-garbage":
        if may_call and not called:
            return _calls(("no_such_tool", "{}"), ("web_search", "{not json"))
        return _say("The tools said: " + " | ".join(_read(r)[:120] for r in results))
    return _researcher(question, offered if may_call else set(), called, results)


def _researcher(question: str, offered: set[Any], called: list[str], results: list[str]) -> dict[str, Any]:
    asked = _URL.findall(question)
    if asked and "web_fetch" in offered and "web_fetch" not in called:
        return _call("web_fetch", {"url": asked[0]})
    if "web_search" in offered and "web_search" not in called:
        return _call("web_search", {"query": question[:300]})
    if "search_documents" in offered and "search_documents" not in called:
        return _call("search_documents", {"query": question[:300]})
    lookup = next((name for name in sorted(offered) if str(name).endswith("lookup_code")), None)
    if lookup is not None and lookup not in called:
        return _call(lookup, {"name": "kestrel"})
    if "web_fetch" in offered and "web_fetch" not in called and results:
        urls = _URL.findall(_read(results[0]))
        if urls:
            return _call("web_fetch", {"url": urls[0]})
    texts = [_read(result) for result in results]
    numbers = sorted({int(n) for text in texts for n in _NUMBER.findall(text)})
    facts = [match.strip() for text in texts for match in _FACT.findall(text)][:3]
    said = " ".join(facts) or " ".join(" ".join(texts).split())[:300] or "I found nothing."
    cites = "".join(f"[{n}]" for n in numbers)
    return _say(f"From my research: {said} {cites}".strip())


def _read(result: str) -> str:
    match = _RESULT.search(result)
    return match[1] if match else result


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return _calls((name, json.dumps(arguments)))


def _calls(*calls: tuple[str, str]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": f"call_r{n}", "type": "function", "function": {"name": name, "arguments": arguments}}
            for n, (name, arguments) in enumerate(calls)
        ],
    }


def _say(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}
