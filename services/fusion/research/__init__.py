"""Research tools for panel members: web search, web fetch, your documents and MCP servers."""
