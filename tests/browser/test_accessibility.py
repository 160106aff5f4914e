"""Accessibility checks a person would make, computed from the rendered styles in Chromium
(issue 19 item 1): every focus indicator ≥ 3:1 against what surrounds it, every text-field
border ≥ 3:1 against its background (WCAG 2.1 1.4.11, 2.4.7), in zh-TW and English.

The keyboard walks each page with Tab; at each stop the focused element's outline colour is
compared with the first opaque background behind it (the outline is drawn outside the element,
over its parent).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from .conftest import EXPECT_TIMEOUT_MS, Portal

PAGES = ("/", "/register", "/login", "/accessibility", "/customs/query", "/password/forgot")
MAX_STOPS = 40

_FOCUSED = """() => {
  const element = document.activeElement;
  if (!element || element === document.body) { return null; }
  const style = getComputedStyle(element);
  let node = element.parentElement, behind = 'rgba(0, 0, 0, 0)';
  while (node) {
    const colour = getComputedStyle(node).backgroundColor;
    if (!/rgba\\(.*, 0\\)$/.test(colour) && colour !== 'transparent') { behind = colour; break; }
    node = node.parentElement;
  }
  return {
    tag: element.tagName, id: element.id, text: (element.textContent || '').trim().slice(0, 40),
    style: style.outlineStyle, width: parseFloat(style.outlineWidth),
    colour: style.outlineColor, behind: behind,
  };
}"""

_BORDERS = """() => Array.from(document.querySelectorAll(
    'input[type=text], input[type=email], input[type=password], input[type=tel],'
    + ' input[type=date], input[type=search], select')).filter(e => e.offsetParent !== null)
  .map(e => ({id: e.id, border: getComputedStyle(e).borderTopColor,
              inside: getComputedStyle(e).backgroundColor}))"""


def _rgb(text: str) -> tuple[float, float, float]:
    found = re.match(r"rgba?\(([\d.]+), ([\d.]+), ([\d.]+)", text)
    assert found, text
    r, g, b = (float(v) for v in found.groups())
    return r, g, b


def _luminance(colour: tuple[float, float, float]) -> float:
    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: str, second: str) -> float:
    """The WCAG contrast ratio of two CSS colours (``rgb(…)``)."""
    a, b = sorted((_luminance(_rgb(first)), _luminance(_rgb(second))), reverse=True)
    return (a + 0.05) / (b + 0.05)


def focused(page: Page) -> dict[str, Any] | None:
    """What has the focus (``tag``, ``id``, ``text``) and its ring as rendered (outline
    ``style``, ``width`` in px, ``colour``, and the first opaque colour ``behind`` it); None
    while the body has it."""
    stop: dict[str, Any] | None = page.evaluate(_FOCUSED)
    return stop


def ring_is_visible(stop: dict[str, Any]) -> bool:
    """The focus ring of ``stop`` (:func:`focused`) is drawn, ≥ 2 px wide and ≥ 3:1 against
    what surrounds it."""
    return bool(
        stop["style"] != "none"
        and stop["width"] >= 2
        and contrast(stop["colour"], stop["behind"]) >= 3
    )


def test_the_contrast_formula_matches_wcags_examples() -> None:
    assert round(contrast("rgb(0, 0, 0)", "rgb(255, 255, 255)"), 1) == 21.0
    assert round(contrast("rgb(255, 191, 71)", "rgb(255, 255, 255)"), 2) == 1.64  # the old ring


@pytest.fixture
def plain_page(browser: Browser, portal: Portal) -> Iterator[Page]:
    context = browser.new_context(locale="zh-TW", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.mark.parametrize("lang", ["zh-TW", "en"])
def test_every_focus_indicator_and_field_border_has_three_to_one(
    plain_page: Page, portal: Portal, lang: str
) -> None:
    weak: list[str] = []
    for path in PAGES:
        plain_page.goto(f"{portal.origin}{path}?lang={lang}")
        seen: set[str] = set()
        for _ in range(MAX_STOPS):
            plain_page.keyboard.press("Tab")
            stop = plain_page.evaluate(_FOCUSED)
            if stop is None:
                break
            key = f"{stop['tag']}#{stop['id']}:{stop['text']}"
            if key in seen:
                break  # around the page once
            seen.add(key)
            ratio = contrast(stop["colour"], stop["behind"])
            if stop["style"] == "none" or stop["width"] < 2 or ratio < 3:
                weak.append(f"{path} {key}: {stop['style']} {stop['width']}px {ratio:.2f}:1")
        assert len(seen) >= 3, f"{path}: the keyboard reached only {seen}"
        for field in plain_page.evaluate(_BORDERS):
            ratio = contrast(field["border"], field["inside"])
            if ratio < 3:
                weak.append(f"{path} border of #{field['id']}: {ratio:.2f}:1")
    assert weak == []
