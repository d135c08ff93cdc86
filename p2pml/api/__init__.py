"""The admin HTTP API (aiohttp) and its client."""
