"""Text a browser does not show stays out of grounding: stylesheets, not only inline styles
(issue 19, docs/security.md "Hidden text in HTML")."""

from __future__ import annotations

import threading

import pytest

from retrieval.documents import html_to_markdown
from retrieval.errors import InvalidDocument

# Each page hides "PLANTED" one way and shows "Refunds take five days." around it.
HIDDEN = {
    "class-display-none": "<style>.note{display:none}</style><p class=note>PLANTED</p>",
    "id-visibility-hidden": "<style>#n { visibility : hidden }</style><p id=n>PLANTED</p>",
    "tag": "<style>aside{display:none}</style><aside><p>PLANTED</p></aside>",
    "style-after-the-text": "<p class=late>PLANTED</p><style>.late{display:none}</style>",
    "style-in-body-of-hidden-div": "<div hidden><style>.x{display:none}</style></div>"
    "<p class=x>PLANTED</p>",
    "descendant": "<style>.faq .secret{display:none}</style>"
    "<div class=faq><div><span class=secret>PLANTED</span></div></div>",
    "compound": "<style>p.a.b[data-k=v]{display:none}</style><p class='b a' data-k=v>PLANTED</p>",
    "child-combinator": "<style>.box > .tip{display:none}</style>"
    "<div class=box><b class=tip>PLANTED</b></div>",
    "selector-list": "<style>.one, .two {display:none}</style><p class=two>PLANTED</p>",
    "attribute-contains": "<style>[data-role*=ghost]{display:none}</style>"
    "<p data-role=xghostx>PLANTED</p>",
    "escaped-class-name": "<style>.hi\\64 e{display:none}</style><p class=hide>PLANTED</p>",
    "comment-inside-rule": "<style>.x{/* } */display:/**/none}</style><p class=x>PLANTED</p>",
    "not-shown": "<style>.panel:not(.open){display:none}</style><div class=panel>PLANTED</div>",
    "important-beats-inline": "<style>.x{display:none !important}</style>"
    "<p class=x style='display:block'>PLANTED</p>",
    "media-screen": "<style>@media screen and (min-width: 1px){.x{display:none}}</style>"
    "<p class=x>PLANTED</p>",
    "phone-only": "<style>.m{display:none}@media (max-width: 600px){.m{display:block}}</style>"
    "<p class=m>PLANTED</p>",
    "hidden-on-wide-screens": "<style>@media (min-width: 1400px){.x{display:none}}</style>"
    "<p class=x>PLANTED</p>",
    "style-element-media": "<style media='screen and (min-width: 800px)'>.x{opacity:0}</style>"
    "<p class=x>PLANTED</p>",
    "supports": "<style>@supports (display: grid){.x{display:none}}</style><p class=x>PLANTED</p>",
    "nested-rule": "<style>.card { .x { display: none } }</style>"
    "<div class=card><p class=x>PLANTED</p></div>",
    "nth-child": "<style>li:nth-child(n+3){display:none} dd:first-child{opacity:0}</style>"
    "<ul><li></li><li><b></b></li><li>PLANTED</li></ul><dl><dd>PLANTED</dd></dl>",
    "nth-of-type": "<style>.s p:nth-of-type(2n){display:none}</style>"
    "<section class=s><span></span><p></p><p>PLANTED</p></section>",
    "font-size-zero": "<style>.tiny{font-size:0}</style><p class=tiny>PLANTED</p>",
    "font-size-one-px": "<p style='font-size:1px'>PLANTED</p>",
    "font-shorthand": "<style>.ir{font:0/0 a}</style><p class=ir>PLANTED</p>",
    "font-size-relative-to-zero": "<div style='font-size:0'>"
    "<p style='font-size:2em'>PLANTED</p></div>",
    "opacity-zero": "<style>.ghost{opacity:0}</style><p class=ghost>PLANTED</p>",
    "opacity-percent": "<p style='opacity: 2%'>PLANTED</p>",
    "clip-rect": "<style>.sr{position:absolute;clip:rect(0,0,0,0)}</style><p class=sr>PLANTED</p>",
    "clip-path-inset": "<style>.c{clip-path:inset(50%)}</style><p class=c>PLANTED</p>",
    "clip-path-circle": "<p style='clip-path: circle(0)'>PLANTED</p>",
    "visually-hidden-box": "<style>.vh{position:absolute;width:1px;height:1px;overflow:hidden}"
    "</style><p class=vh>PLANTED</p>",
    "collapsed-box": "<style>.c{max-height:0;overflow:hidden}</style><p class=c>PLANTED</p>",
    "off-screen-left": "<style>.away{position:absolute;left:-9999px}</style>"
    "<p class=away>PLANTED</p>",
    "off-screen-top-em": "<style>.away{position:absolute;top:-100em}</style>"
    "<p class=away>PLANTED</p>",
    "text-indent": "<style>.ir{text-indent:-9999px}</style><p class=ir>PLANTED</p>",
    "margin-shorthand": "<style>.m{margin:0 0 0 -10000px}</style><p class=m>PLANTED</p>",
    "transform-translate": "<style>.t{transform:translateX(-10000px)}</style>"
    "<p class=t>PLANTED</p>",
    "transform-scale": "<style>.t{transform:scale(0)}</style><p class=t>PLANTED</p>",
    "white-on-default-white": "<style>.w{color:#fff}</style><p class=w>PLANTED</p>",
    "same-colour-as-background": "<style>.w{color:rgb(10, 20, 30);background:#0a141e}</style>"
    "<p class=w>PLANTED</p>",
    "near-background-colour": "<style>body{background-color:#202020}.w{color:#222}</style>"
    "<body><p class=w>PLANTED</p></body>",
    "font-colour-attribute": "<font color='#FFFFFF'>PLANTED</font>",
    "bgcolor-attribute": "<table bgcolor=navy><tr><td><font color=navy>PLANTED</font></table>",
    "hsl-white": "<p style='color: hsl(0deg 0% 100%)'>PLANTED</p>",
    "system-colour-canvas": "<p style='color: Canvas'>PLANTED</p>",
    "transparent-text": "<p style='color: transparent'>PLANTED</p>",
    "content-visibility": "<p style='content-visibility:hidden'>PLANTED</p>",
    "dialog-not-open": "<dialog><p>PLANTED</p></dialog>",
    "iframe-fallback": "<iframe><p>PLANTED</p></iframe>",
    "noscript": "<noscript><p>PLANTED</p></noscript>",
    "template": "<template><p>PLANTED</p></template>",
}


@pytest.mark.parametrize("trick", HIDDEN.values(), ids=HIDDEN.keys())
def test_hidden_text_is_dropped(trick: str) -> None:
    page = f"<h2>Refunds</h2><p>Refunds take five days.</p>{trick}<p>Ask us anything.</p>"
    assert html_to_markdown(page) == "## Refunds\n\nRefunds take five days.\n\nAsk us anything."


# Each page shows "SHOWN" although something near it looks like a hiding trick.
SHOWN = {
    "similar-class-names": "<style>.hide{display:none}</style>"
    "<p class=hidex>SHOWN</p><p class=xhide>SHOWN</p><p class=hide-not>SHOWN</p>",
    "class-is-case-sensitive": "<style>.Hide{display:none}</style><p class=hide>SHOWN</p>",
    "descendant-outside-its-ancestor": "<style>.faq .secret{display:none}</style>"
    "<div class=faq>SHOWN</div><span class=secret>SHOWN</span>",
    "compound-partly-matched": "<style>p.a.b{display:none}</style>"
    "<p class=a>SHOWN</p><div class='a b'>SHOWN</div>",
    "later-rule-shows-again": "<style>.x{display:none}</style><style>.x{display:block}</style>"
    "<p class=x>SHOWN</p>",
    "more-specific-rule-shows": "<style>p.x.open{display:block}.x{display:none}</style>"
    "<p class='x open'>SHOWN</p>",
    "inline-shows-again": "<style>.x{display:none}</style>"
    "<p class=x style='display:block'>SHOWN</p>",
    "not-matching-the-exception": "<style>.panel:not(.open){display:none}</style>"
    "<div class='panel open'>SHOWN</div>",
    "hover-only": "<style>.x:hover{display:none} .y:focus{opacity:0}</style>"
    "<p class=x>SHOWN</p><p class=y>SHOWN</p>",
    "pseudo-element": "<style>.x::before{display:none}.x:after{font-size:0}</style>"
    "<p class=x>SHOWN</p>",
    "print-only": "<style>@media print{.x{display:none}}</style>"
    "<style media=print>.x{opacity:0}</style><p class=x>SHOWN</p>",
    "responsive-duplicates": "<style>.mobile{display:none} .wide{display:none}"
    "@media (max-width: 600px){.mobile{display:block}.desktop{display:none}}"
    "@media screen and (min-width: 768px){.wide{display:block}}</style>"
    "<p class=desktop>SHOWN</p><p class=mobile>gone</p><p class=wide>SHOWN</p>",
    "hidden-only-on-phones-and-in-portrait": "<style>@media (orientation: portrait),"
    "(hover: none), (400px <= width <= 700px){.x{display:none}}</style><p class=x>SHOWN</p>",
    "style-in-template": "<template><style>p{display:none}</style></template><p>SHOWN</p>",
    "style-of-another-type": "<style type=text/plain>p{display:none}</style><p>SHOWN</p>",
    "declaration-in-a-string": "<style>.x{content:'display:none;'}</style><p class=x>SHOWN</p>",
    "aria-hidden": "<p aria-hidden=true>SHOWN</p><span aria-hidden='true'><b>SHOWN</b></span>",
    "font-size-reset-inside-zero": "<div style='font-size:0'><span style='font-size:16px'>"
    "SHOWN</span> <span style='font-size:1rem'>SHOWN</span></div>",
    "small-but-readable-font": "<p style='font-size:9px'>SHOWN</p>",
    "half-transparent": "<p style='opacity:.5'>SHOWN</p>",
    "small-offset": "<p style='position:relative;left:-20px;text-indent:-1em'>SHOWN</p>",
    "white-on-dark": "<div style='background:#123'><p style='color:#fff'>SHOWN</p></div>",
    "white-on-a-bgcolor": "<table bgcolor=black><tr><td><font color=white>SHOWN</font></table>",
    "white-on-a-conditional-background": "<style>body{color:#fff}"
    "@media screen{body{background:#000}}</style><body><p>SHOWN</p></body>",
    "white-on-hsl-dark": "<div style='background:hsl(220, 40%, 20%)'><p style='color:#fff'>"
    "SHOWN</p></div>",
    "white-on-a-picture": "<div style='background-image:url(hero.jpg)'>"
    "<p style='color:white'>SHOWN</p></div>",
    "unknown-colour": "<p style='color:var(--fg)'>SHOWN</p>",
    "overflow-hidden-but-big": "<p style='overflow:hidden;height:20px'>SHOWN</p>",
    "only-the-nth": "<style>li:nth-child(3){display:none}p:first-of-type{opacity:0}</style>"
    "<ul><li>SHOWN</li><li><b>x</b>SHOWN</li><li>gone</li><li>SHOWN</li></ul>"
    "<div><p>gone</p><p>SHOWN</p></div>",
    "closed-details": "<details><summary>SHOWN</summary>SHOWN</details>",
    "open-dialog": "<dialog open>SHOWN</dialog>",
    "implied-end-of-a-hidden-p": "<style>.x{display:none}</style><p class=x>gone<p>SHOWN</p>"
    "<ul><li class=x>gone<li>SHOWN</ul>",
    "implied-end-over-inline-elements": "<style>.x{display:none}</style>"
    "<p class=x>gone<span><b>gone<div>SHOWN</div>"
    "<ul><li class=x><a>gone<li>SHOWN</ul><table><tr><td class=x><i>gone<td>SHOWN</table>",
    "nested-list-is-not-ended": "<style>.x{display:none}</style>"
    "<ul><li class=x>gone<ul><li>gone</ul></ul><p>SHOWN</p>",
}


@pytest.mark.parametrize("page", SHOWN.values(), ids=SHOWN.keys())
def test_visible_text_is_kept(page: str) -> None:
    text = html_to_markdown(page)
    assert text.count("SHOWN") == page.count(">SHOWN<"), text
    assert "gone" not in text


def test_unfinished_markup_at_the_end_shows_nothing() -> None:
    page = "<p>Refunds take five days.</p><!-- PLANTED <p>PLANTED</p> <b PLANTED"
    assert html_to_markdown(page) == "Refunds take five days."
    assert html_to_markdown("<p>a</p><!-- x --><p>b <i") == "a\n\nb"


def test_a_malformed_marked_section_is_refused_not_a_crash() -> None:
    # html.parser raised AssertionError (a 500) on this.
    with pytest.raises(InvalidDocument, match="not HTML that can be read"):
        html_to_markdown("<p>a</p><![<![x]]>")


def test_a_stylesheet_too_complex_to_evaluate_is_refused() -> None:
    # Every <div> would be compared with every rule: 12 million comparisons.
    rules = "".join(f"div[data-n='{n}'] {{ display: none }}" for n in range(4_000))
    with pytest.raises(InvalidDocument, match="too complex"):
        html_to_markdown(f"<style>{rules}</style>" + "<div>x</div>" * 3_000)


# 1 MB pages built to make a careless implementation look at every ancestor, rule or
# character again for each element.
PATHOLOGICAL = {
    "deep-nesting-with-descendant-rules": "<style>.a .b .c .d{display:none} div div p{opacity:0}"
    "</style>" + "<div class='a b c'>x" * 50_000,
    "many-rules-one-key": "<style>"
    + "".join(f"div[x='{n}']{{display:none}}" for n in range(25_000))
    + "</style>"
    + "<div>y</div>" * 40_000,
    "implied-ends-and-stray-end-tags": "<style>p p .x{display:none}.x{font-size:0}</style>"
    + "<p><li>" * 75_000
    + "</span>" * 75_000,
    "unclosed-css": "<style>" + "/*" * 80_000 + "'" + ":not(" * 80_000 + "[" * 80_000 + "</style>"
    "<p>x</p>" + "<i style='" + "a:b;" * 80_000 + "'>y</i>",
    "nested-rule-fan-out": "<style>"
    + ",".join(f".p{n}" for n in range(3_000))
    + "{"
    + ",".join(f"& .q{n}" for n in range(3_000))
    + "{display:none}}</style>"
    + "<p>x</p>" * 110_000,
    # html.parser itself rescans an unfinished comment or tag at the end of a page once per
    # character: these took minutes before the page's unfinished end was cut.
    "unclosed-comments": "<p>x</p>" + "<!--" * 250_000,
    "unclosed-tags": "<p>x</p>" + "<a" * 250_000 + "</" * 250_000,
    "long-values": "<p style='font-size:" + "1" * 300_000 + "x!'>a</p>"
    "<p style='background:" + "a" * 300_000 + "'>b</p>"
    "<p style='transform:" + "a(" * 200_000 + "'>c</p>",
}


@pytest.mark.parametrize("page", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_pages_are_read_in_linear_time(page: str) -> None:
    """Each takes a second or two; a quadratic step would take minutes. Checked from a
    thread so that a regression fails the test instead of hanging it; the bound is wide
    because the suite may share the machine with a vLLM server."""
    assert len(page) >= 900_000
    done: list[str] = []

    def read() -> None:
        try:
            html_to_markdown(page)
        except InvalidDocument as exc:
            assert "too complex" in exc.message
        done.append("read")

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done, "reading a 1 MB pathological page took over 30 s"
