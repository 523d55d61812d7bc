"""The web site the agent tests browse: real pages served by aiohttp on 127.0.0.1."""

from __future__ import annotations

import asyncio

from aiohttp import web

PAGE = """<!doctype html>
<html><head><title>{title}</title></head><body>{body}</body></html>"""

INDEX = """
<h1 id="heading" class="big">Hello Viper</h1>
<p class="item">one</p><p class="item">two</p><p class="item" data-x="3">three</p>
<a id="next" href="/second">next</a>
<input id="name" value="">
<textarea id="notes"></textarea>
<button id="btn" onclick="document.getElementById('out').textContent='clicked ' +
  (++window.clicks)">Click</button>
<button id="hidden" style="display:none">hidden</button>
<div id="out"></div>
<button id="later" onclick="setTimeout(() => {
  const d = document.createElement('div'); d.id = 'appeared'; d.textContent = 'here';
  document.body.appendChild(d); }, 300)">later</button>
<button id="go" onclick="setTimeout(() => { location.href = '/second'; }, 200)">go</button>
<script>window.clicks = 0;</script>
"""

LOGIN = """
<div id="state"></div>
<script>
  localStorage.setItem('token', 'tok-123');
  sessionStorage.setItem('tab', 'tab-456');
  document.getElementById('state').textContent = 'logged in';
</script>
"""

ACCOUNT = """
<div id="who">{who}</div>
<div id="token"></div><div id="tab"></div>
<script>
  document.getElementById('token').textContent = localStorage.getItem('token') || 'none';
  document.getElementById('tab').textContent = sessionStorage.getItem('tab') || 'none';
</script>
"""

NOISY = """
<canvas id="c" width="{w}" height="{h}"></canvas>
<script>
  const c = document.getElementById('c'), ctx = c.getContext('2d');
  const img = ctx.createImageData(c.width, c.height);
  // Random pixels do not compress: the PNG is about as large as the raw image.
  for (let i = 0; i < img.data.length; i += 65536) {{
    crypto.getRandomValues(img.data.subarray(i, Math.min(i + 65536, img.data.length)));
  }}
  for (let i = 3; i < img.data.length; i += 4) img.data[i] = 255;
  ctx.putImageData(img, 0, 0);
  document.title = 'noisy';
</script>
<style>body {{ margin: 0 }}</style>
"""

CONSOLE = """
<script>
  console.log('hello from the page', 42);
  console.warn('careful');
  setTimeout(() => {{ throw new Error('boom in page'); }}, 0);
</script>
"""


def _page(title: str, body: str) -> web.Response:
    return web.Response(text=PAGE.format(title=title, body=body), content_type="text/html")


async def index(_: web.Request) -> web.Response:
    return _page("Index", INDEX)


async def second(_: web.Request) -> web.Response:
    return _page("Second", '<p id="second">second page</p><a id="back" href="/">back</a>')


async def missing(_: web.Request) -> web.Response:
    return web.Response(
        status=404, text=PAGE.format(title="Missing", body="nope"), content_type="text/html"
    )


async def slow(_: web.Request) -> web.Response:
    await asyncio.sleep(3)
    return _page("Slow", "slow")


async def login(_: web.Request) -> web.Response:
    resp = _page("Login", LOGIN)
    resp.set_cookie("sid", "s3cret", httponly=True, max_age=3600, samesite="Lax")
    resp.set_cookie("pref", "dark")
    return resp


async def account(request: web.Request) -> web.Response:
    who = "alice" if request.cookies.get("sid") == "s3cret" else "anonymous"
    return _page("Account", ACCOUNT.format(who=who))


async def noisy(request: web.Request) -> web.Response:
    w = int(request.query.get("w", "1600"))
    h = int(request.query.get("h", "1600"))
    return _page("noisy", NOISY.format(w=w, h=h))


async def console(_: web.Request) -> web.Response:
    return _page("Console", CONSOLE.replace("{{", "{").replace("}}", "}"))


def make_site() -> web.Application:
    """The test site's application."""
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/second", second)
    app.router.add_get("/missing", missing)
    app.router.add_get("/slow", slow)
    app.router.add_get("/login", login)
    app.router.add_get("/account", account)
    app.router.add_get("/noisy", noisy)
    app.router.add_get("/console", console)
    return app
