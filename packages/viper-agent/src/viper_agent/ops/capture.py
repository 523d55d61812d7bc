"""Screenshots: viewport or full page, PNG or JPEG, exactly as asked."""

from __future__ import annotations

import base64
import logging
import math

from viper_agent.browser import Page
from viper_agent.cdp.generated import page as cdp_page
from viper_protocol.models.browser import ImageFormat, ScreenshotQuery

logger = logging.getLogger(__name__)

MAX_SIDE = 16_384  # beyond this Chromium's compositor cannot capture in one piece

CONTENT_TYPES = {ImageFormat.PNG: "image/png", ImageFormat.JPEG: "image/jpeg"}


async def screenshot(page: Page, q: ScreenshotQuery) -> bytes:
    """Capture the page and return the encoded image bytes."""
    clip = None
    if q.full_page:
        metrics = await page.session.execute(cdp_page.get_layout_metrics())
        size = metrics.css_content_size
        width = min(MAX_SIDE, max(1, math.ceil(float(size["width"]))))
        height = min(MAX_SIDE, max(1, math.ceil(float(size["height"]))))
        clip = cdp_page.Viewport(x=0, y=0, width=width, height=height, scale=1)
    shot = await page.session.execute(
        cdp_page.capture_screenshot(
            format=q.format.value,
            quality=q.quality if q.format is ImageFormat.JPEG else None,
            clip=clip,
            capture_beyond_viewport=q.full_page,
            from_surface=True,
        ),
        timeout=q.timeout_ms / 1000,
    )
    return base64.b64decode(shot.data)
