"""The HTTP layer of viper-server: middlewares, route modules and the OpenAPI document.

Only this package (and `agent_client.py`) knows about aiohttp; the orchestrator below it speaks
protocol models and raises `ViperError`s.
"""
