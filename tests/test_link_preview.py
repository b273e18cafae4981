"""Is a request for a launch link a person's browser navigation? A table of request shapes.

User agents are as their senders document or publish them; fetch metadata as browsers send
it (Chromium 76+, Firefox 90+, Safari 16.4+, which never sends ``Sec-Fetch-User``).
"""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders

from cnbi_spawner.link_preview import AGENTS, Visit, agent_of, classify, preview_page

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15"
)
OLD_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 15_8 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/15.6 Mobile/15E148 Safari/604.1"
)
CLICK = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
USER = {"Sec-Fetch-User": "?1"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}

# the previewers and scanners the issue names, as they send (no fetch metadata: server-side)
PREVIEWERS = [
    ("Slack unfurl", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"),
    ("Slack", "Slackbot 1.0 (+https://api.slack.com/robots)"),
    ("Slack image proxy", "Slack-ImgProxy (+https://api.slack.com/robots)"),
    (
        "Teams",
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/51.0.2704.79 Safari/537.36 SkypeUriPreview Preview/0.5 "
        "skype-url-preview@microsoft.com",
    ),
    ("Teams (plain)", "SkypeUriPreview Preview/0.5"),
    (
        "Teams / Bing MicrosoftPreview",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; MicrosoftPreview/2.0; "
        "+https://aka.ms/MicrosoftPreview) Chrome/131.0.0.0 Safari/537.36",
    ),
    ("Discord", "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)"),
    ("Facebook", "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
    ("Facebook (Facebot)", "Facebot"),
    (
        "iMessage",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) "
        "Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    ),
    ("X / Twitter", "Twitterbot/1.0"),
    ("LinkedIn",
     "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)"),
    ("Outlook desktop",
     "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)"),
    ("Office link check", "Microsoft Office Existence Discovery"),
    (
        "Outlook / Bing preview",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "BingPreview/1.0b",
    ),
    ("Bing", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"),
    ("Googlebot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
    (
        "Google page renderer",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko; "
        "Google-PageRenderer Google (+https://developers.google.com/+/web/snippet/)) "
        "Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        "Google Read Aloud",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 (compatible; Google-Read-Aloud; "
        "+https://support.google.com/webmasters/answer/1061943)",
    ),
    (
        "Gmail image proxy",
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    ),
    ("Google Feedfetcher", "FeedFetcher-Google; (+http://www.google.com/feedfetcher.html)"),
    ("Google APIs", "APIs-Google (+https://developers.google.com/webmasters/APIs-Google.html)"),
    ("WhatsApp", "WhatsApp/2.23.20.0 A"),
    ("Telegram", "TelegramBot (like TwitterBot)"),
    ("Mastodon", "Mastodon/4.3.2 (http.rb/5.2.0; +https://mastodon.social/) Bot"),
    ("Applebot", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)"),
]  # fmt: skip


@pytest.mark.parametrize("who,agent", PREVIEWERS, ids=[p[0] for p in PREVIEWERS])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_previewers_never_launch(who, agent, method):
    plain = classify(method, HTTPHeaders({"User-Agent": agent, "Accept": "*/*"}))
    assert plain.visit is Visit.PREVIEW
    # even when they render in a browser engine that sends fetch metadata
    browserish = classify(method, HTTPHeaders({"User-Agent": agent, **HTML, **CLICK, **USER}))
    assert browserish.visit is Visit.PREVIEW and not browserish.launches


CASES = [
    # (label, method, headers, visit)
    ("Chromium click", "GET", {"User-Agent": CHROME, **HTML, **CLICK, **USER}, Visit.LAUNCH),
    ("Firefox click", "GET", {"User-Agent": FIREFOX, **HTML, **CLICK, **USER}, Visit.LAUNCH),
    ("Safari 16.4+ click (no Sec-Fetch-User)", "GET", {"User-Agent": SAFARI, **HTML, **CLICK},
     Visit.LAUNCH),
    ("opened from a mail app", "GET",
     {"User-Agent": CHROME, **CLICK, "Sec-Fetch-Site": "none", **USER}, Visit.LAUNCH),
    ("LMS redirect chain", "GET",
     {"User-Agent": FIREFOX, **CLICK, "Sec-Fetch-Site": "same-site"}, Visit.LAUNCH),
    ("Chromium 76-79 (no Dest)", "GET", {"User-Agent": CHROME, "Sec-Fetch-Mode": "navigate"},
     Visit.LAUNCH),
    ("the button (old browser)", "POST", {"User-Agent": OLD_SAFARI}, Visit.LAUNCH),
    ("the button (current browser)", "POST",
     {"User-Agent": FIREFOX, **CLICK, "Sec-Fetch-Site": "same-origin", **USER}, Visit.LAUNCH),
    ("Safari before 16.4", "GET", {"User-Agent": OLD_SAFARI, **HTML}, Visit.CONFIRM),
    ("plain-http hub (no metadata)", "GET", {"User-Agent": CHROME, **HTML}, Visit.CONFIRM),
    ("Defender Safe Links pre-delivery scan", "GET",
     {"User-Agent": CHROME, "Accept": "*/*"}, Visit.CONFIRM),
    ("curl", "GET", {"User-Agent": "curl/8.5.0", "Accept": "*/*"}, Visit.CONFIRM),
    ("python", "GET", {"User-Agent": "python-requests/2.32.3"}, Visit.CONFIRM),
    ("no headers at all", "GET", {}, Visit.CONFIRM),
    ("embedded in an iframe", "GET",
     {"User-Agent": CHROME, **CLICK, "Sec-Fetch-Dest": "iframe"}, Visit.CONFIRM),
    ("HEAD from a browser", "HEAD", {"User-Agent": CHROME, **CLICK, **USER}, Visit.PREVIEW),
    ("OPTIONS", "OPTIONS", {"User-Agent": CHROME}, Visit.PREVIEW),
    ("Chromium prerender", "GET",
     {"User-Agent": CHROME, **CLICK, "Sec-Purpose": "prefetch;prerender"}, Visit.PREVIEW),
    ("Chromium prefetch", "GET",
     {"User-Agent": CHROME, **CLICK, "Sec-Purpose": "prefetch"}, Visit.PREVIEW),
    ("Firefox link prefetch", "GET", {"User-Agent": FIREFOX, "X-Moz": "prefetch"}, Visit.PREVIEW),
    ("old Chrome prefetch", "GET", {"User-Agent": CHROME, "Purpose": "prefetch"}, Visit.PREVIEW),
    ("fetch() from a page", "GET",
     {"User-Agent": CHROME, "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty",
      "Sec-Fetch-Site": "cross-site"}, Visit.PREVIEW),
    ("<img src=link>", "GET",
     {"User-Agent": CHROME, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
     Visit.PREVIEW),
    ("navigation to a worker", "GET",
     {"User-Agent": CHROME, "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "worker"},
     Visit.PREVIEW),
]  # fmt: skip


@pytest.mark.parametrize("label,method,headers,visit", CASES, ids=[c[0] for c in CASES])
def test_request_shapes(label, method, headers, visit):
    decision = classify(method, HTTPHeaders(headers))
    assert decision.visit is visit, decision
    assert decision.launches is (visit is Visit.LAUNCH)
    assert decision.reason


def test_header_names_are_case_insensitive():
    lower = HTTPHeaders({"sec-fetch-mode": "Navigate", "sec-fetch-dest": "Document"})
    assert classify("get", lower).launches


def test_agent_tokens_are_lower_case_and_specific():
    for token, who in AGENTS:
        assert token == token.lower() and len(token) >= 5 and who
    # ordinary browsers are nobody in particular
    for ua in (CHROME, FIREFOX, SAFARI, OLD_SAFARI, ""):
        assert agent_of(ua) is None


def test_preview_page_fields():
    page = preview_page("Intro <b>AI</b>", "uai.intro", "Week 1\n\nlabs", "lectures/l1.ipynb")
    assert page.title == "Intro <b>AI</b>"  # plain text: the template escapes it
    assert page.description.startswith("Opens lectures/l1.ipynb in JupyterLab, no account")
    assert page.description.endswith("Week 1 labs")
    long = preview_page("x" * 500, "c", "d" * 5000, None)
    assert len(long.title) <= 120 and len(long.description) <= 300
    assert preview_page("", "course-key", "", None).title == "course-key"
