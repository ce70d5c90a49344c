"""The OpenAI-compatible gateway: Fusion as a model name, streaming, and Fusion as a tool."""
