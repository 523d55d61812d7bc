"""Playwright (from PyPI, no browser download) drives Chromium through the agent's proxy."""

from __future__ import annotations

from playwright.async_api import async_playwright

from tests.conftest import AgentClient, Site


async def test_playwright_over_the_agent_proxy(agent: AgentClient, site: Site) -> None:
    endpoint = f"http://127.0.0.1:{agent.server.port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.connect_over_cdp(endpoint)
        try:
            context = browser.contexts[0]
            page = await context.new_page()
            await page.goto(site.url("/"))
            assert await page.title() == "Index"
            await page.click("#btn")
            assert await page.text_content("#out") == "clicked 1"
            await page.type("#name", "typed by playwright")
            assert await page.input_value("#name") == "typed by playwright"
            await page.goto(site.url("/noisy?w=1600&h=1600"))
            image = await page.screenshot(full_page=True, type="png")
            # Far beyond aiohttp's default 4 MiB WebSocket message cap (base64 on the wire).
            assert len(image) > 5 * 1024 * 1024
            assert image[:8] == b"\x89PNG\r\n\x1a\n"
            assert int.from_bytes(image[16:20], "big") == 1600
            # The agent sees the tab Playwright opened.
            targets = await (await agent.get("/v1/targets")).json()
            assert any(t["url"].endswith("/noisy?w=1600&h=1600") for t in targets["targets"])
            await page.close()
        finally:
            await browser.close()
    health = await (await agent.get("/v1/health")).json()
    assert health["status"] == "ok"
    assert health["browser"]["restarts"] == 0  # Playwright disconnected; Chromium stayed up
