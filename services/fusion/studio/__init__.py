"""Fusion Studio: a chat room (`/studio`) and activity pages (`/studio/activity`) served by the gateway.

Pages are rendered on the server (Jinja2, autoescaped); the one script, `static/studio.js`, streams
the chat through the gateway's own chat completions API. Every model output a page shows goes through
`render.markdown_html` (nh3) or autoescaping, so a strict Content-Security-Policy holds on every page."""
