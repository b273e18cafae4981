"""Is this request for a launch link a person's browser opening it? (pure)

A launch link (``/hub/tmplogin?course=…``) creates a user and starts a server, so every
fetch that is not a person opening it must create nothing: link unfurlers (Slack, Teams,
Discord, Facebook/Messenger/iMessage, X/Twitter, LinkedIn, WhatsApp, Telegram, Mastodon …),
mail scanners (Outlook/Microsoft Defender Safe Links, Google's previewers and proxies …),
search crawlers and browsers' own prefetching. They get a small 200 page instead, whose
Open Graph title and description name the course, so the preview is still useful.

Policy (:func:`classify`), first match wins:

1. ``HEAD`` (and anything but ``GET``/``POST``): **preview**. Nothing reads a HEAD as a click.
2. A ``User-Agent`` naming a known previewer, scanner or crawler (:data:`AGENTS`; the
   tokens their documentation gives): **preview**, even with browser-like headers: several
   (Google-PageRenderer, MicrosoftPreview, iMessage's ``facebookexternalhit … Twitterbot``)
   render in a real browser engine.
3. The browser says it is prefetching or prerendering (``Sec-Purpose``/``Purpose``/
   ``X-Purpose``/``X-Moz`` naming ``prefetch``/``prerender``/``preview``): **preview**;
   Chromium prerenders address-bar suggestions, which must not start servers.
4. Fetch metadata (sent by Chromium 76+, Firefox 90+, Safari 16.4+ to HTTPS and loopback
   origins; they are forbidden headers, so no page's script can set them):
   ``Sec-Fetch-Mode: navigate`` + ``Sec-Fetch-Dest: document`` is a top-level navigation:
   **launch**. ``Sec-Fetch-User: ?1`` is not required, because Safari never sends it and
   neither does a redirect chain from an LMS or a mail scanner's click-time check.
   A navigation into a frame (``iframe``/``frame``/``embed``/``object``): **confirm** (a
   page could embed the link invisibly). Any other mode (``cors``, ``no-cors``,
   ``same-origin``, ``websocket``): **preview**; nothing but a navigation launches.
5. No fetch metadata at all: an old browser, a plain-``http`` hub, or a program (most
   scanners fetch from servers with plain HTTP libraries): **confirm**.

``confirm`` is the same page with one button, a form ``POST`` back to the same link with the
hub's XSRF token; the ``POST`` is a launch (rule 5 does not apply to it), because link
fetchers do not submit forms and the XSRF check ties it to the page just shown. So an old
browser needs one extra click, a current one none.

This module decides and builds the page's fields; the handler (:mod:`cnbi_spawner.tmplogin`)
applies it before anything else (before rate limiting, so previews never use up learners'
launch tokens) and renders :data:`PAGE` with the hub's templates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

#: (lower-case ``User-Agent`` substring, who sends it). Substrings, not patterns: every one
#: is a product token from the sender's own documentation or published user agent.
AGENTS: tuple[tuple[str, str], ...] = (
    ("slackbot", "Slack (Slackbot-LinkExpanding, Slackbot)"),
    ("slack-imgproxy", "Slack image proxy"),
    ("skypeuripreview", "Microsoft Teams / Skype link preview"),
    ("microsoftpreview", "Microsoft Teams / Bing link preview"),
    ("bingpreview", "Bing / Outlook preview"),
    ("bingbot", "Bing crawler"),
    ("microsoft office", "Microsoft Office / Outlook link check"),
    ("ms-office", "Microsoft Office link check"),
    ("discordbot", "Discord"),
    ("facebookexternalhit", "Facebook, Messenger, Instagram, iMessage"),
    ("facebot", "Facebook"),
    ("meta-externalagent", "Meta"),
    ("meta-externalfetcher", "Meta"),
    ("twitterbot", "X / Twitter (and iMessage)"),
    ("linkedinbot", "LinkedIn"),
    ("whatsapp", "WhatsApp"),
    ("telegrambot", "Telegram"),
    ("mastodon/", "Mastodon"),
    ("pleroma", "Pleroma"),
    ("akkoma", "Akkoma"),
    ("misskey", "Misskey"),
    ("googlebot", "Google crawler"),
    ("google-pagerenderer", "Google page renderer"),
    ("google-read-aloud", "Google Read Aloud"),
    ("googleimageproxy", "Gmail image proxy"),
    ("google-inspectiontool", "Google Search Console"),
    ("googleother", "Google"),
    ("google-safety", "Google safety scanner"),
    ("google-extended", "Google"),
    ("apis-google", "Google APIs"),
    ("feedfetcher-google", "Google Feedfetcher"),
    ("mediapartners-google", "Google"),
    ("adsbot-google", "Google Ads"),
    ("google-site-verification", "Google Site Verifier"),
    ("duplexweb-google", "Google"),
    ("applebot", "Apple"),
    ("pinterestbot", "Pinterest"),
    ("redditbot", "Reddit"),
    ("embedly", "Embedly"),
    ("iframely", "Iframely"),
    ("snapchat", "Snapchat"),
    ("viber", "Viber"),
    ("skypebot", "Skype"),
    ("yandexbot", "Yandex"),
    ("duckduckbot", "DuckDuckGo"),
    ("baiduspider", "Baidu"),
    ("petalbot", "Huawei Petal"),
)
NAVIGATION_DESTS = frozenset({"document"})
FRAME_DESTS = frozenset({"iframe", "frame", "embed", "object", "fencedframe"})
PURPOSE_HEADERS = ("Sec-Purpose", "Purpose", "X-Purpose", "X-Moz")
_PREFETCH = re.compile(r"prefetch|prerender|preview", re.IGNORECASE)
MAX_FIELD = 120


class Visit(Enum):
    """What to do with a request for a launch link."""

    LAUNCH = "launch"  # a person's browser navigation: go ahead
    CONFIRM = "confirm"  # maybe a person: the page with one launch button, nothing created
    PREVIEW = "preview"  # a machine: the page, nothing created


@dataclass(frozen=True, slots=True)
class VisitDecision:
    visit: Visit
    reason: str  # short, for the log line: "navigation", "agent:Discord", "head" …

    @property
    def launches(self) -> bool:
        return self.visit is Visit.LAUNCH


def agent_of(user_agent: str) -> str | None:
    """Who a ``User-Agent`` says it is, if it is a known previewer, scanner or crawler."""
    lowered = user_agent.lower()
    for token, who in AGENTS:
        if token in lowered:
            return who
    return None


def classify(method: str, headers: Mapping[str, str]) -> VisitDecision:
    """Decide for one request (``headers`` looked up case-insensitively by the caller's
    mapping, e.g. tornado's ``HTTPHeaders``); rules in the module docstring."""
    method = method.upper()
    if method not in ("GET", "POST"):
        return VisitDecision(Visit.PREVIEW, method.lower()[:10])
    who = agent_of(headers.get("User-Agent", "") or "")
    if who:
        return VisitDecision(Visit.PREVIEW, f"agent:{who}")
    for name in PURPOSE_HEADERS:
        if _PREFETCH.search(headers.get(name, "") or ""):
            return VisitDecision(Visit.PREVIEW, "prefetch")
    mode = (headers.get("Sec-Fetch-Mode", "") or "").strip().lower()
    dest = (headers.get("Sec-Fetch-Dest", "") or "").strip().lower()
    if not mode:
        if method == "POST":  # the confirm page's button (XSRF-checked by the hub)
            return VisitDecision(Visit.LAUNCH, "confirmed")
        return VisitDecision(Visit.CONFIRM, "no-fetch-metadata")
    if mode != "navigate":
        return VisitDecision(Visit.PREVIEW, f"mode:{mode[:20]}")
    if dest in NAVIGATION_DESTS or not dest:  # Chromium 76-79 sent Mode without Dest
        return VisitDecision(Visit.LAUNCH, "confirmed" if method == "POST" else "navigation")
    if dest in FRAME_DESTS:
        return VisitDecision(Visit.CONFIRM, f"dest:{dest}")
    return VisitDecision(Visit.PREVIEW, f"dest:{dest[:20]}")


@dataclass(frozen=True, slots=True)
class PreviewPage:
    """The fields of the page (plain text; the template escapes them)."""

    title: str
    description: str
    course: str
    notebook: str


def _clip(text: str, limit: int = MAX_FIELD) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def preview_page(display_name: str, course: str, description: str, notebook: str | None):
    """The page for a launch of ``course`` (its registry display name and description)."""
    name = _clip(display_name or course)
    what = f"Opens {notebook} in JupyterLab" if notebook else "Opens the course in JupyterLab"
    desc = _clip(description, 200) if description else ""
    return PreviewPage(
        title=name,
        description=_clip(f"{what}, no account needed." + (f" {desc}" if desc else ""), 300),
        course=course,
        notebook=notebook or "",
    )


#: Rendered with the hub's Jinja environment (autoescaping), so it looks like the hub's pages.
PAGE = """{% extends "page.html" %}
{% block title %}{{ preview.title }}{% endblock title %}
{% block meta %}
  {{ super() }}
  <meta name="robots" content="noindex, nofollow">
  <meta name="description" content="{{ preview.description }}">
  <meta property="og:type" content="website">
  <meta property="og:title" content="{{ preview.title }}">
  <meta property="og:description" content="{{ preview.description }}">
  <meta property="og:site_name" content="JupyterHub">
  <meta name="twitter:card" content="summary">
  <meta name="twitter:title" content="{{ preview.title }}">
  <meta name="twitter:description" content="{{ preview.description }}">
{% endblock meta %}
{% block main %}
<div class="container" id="cnbi-launch-preview">
  <h1>{{ preview.title }}</h1>
  <p>{{ preview.description }}</p>
  <form method="post" action="{{ action }}" target="_top">
    <input type="hidden" name="_xsrf" value="{{ xsrf }}">
    <button type="submit" class="btn btn-jupyter btn-lg" id="cnbi-launch">Open the course</button>
  </form>
</div>
{% endblock main %}
"""
