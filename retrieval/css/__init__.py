"""Which elements of an HTML page a browser does not show, from its ``<style>`` blocks and
inline styles: enough CSS to keep hidden text out of grounding (docs/security.md, "Hidden
text in HTML"). Not a CSS engine; no CSS library is installed, so this is a small one.

What is evaluated: rules in ``<style>`` blocks and ``style`` attributes, with the cascade
(``!important``, inline, specificity, order) for the properties below. Selectors: type,
``*``, class, id, attribute selectors, ``:not()`` of simple selectors, ``:root``,
``:first-child``, ``:nth-child()``, ``:first-of-type``, ``:nth-of-type()``, and the
descendant combinator. Everything else is read so that it can only hide more, never less
("fail closed"): ``>`` is read as a descendant combinator, the left side of ``+``/``~`` and
unsupported pseudo-classes are dropped, and rules inside an ``@media`` that holds at only
some desktop widths (or tests a feature not known here), ``@supports``, ``@layer``,
``@container`` and nested rules count only where they hide. Such a loose rule never
un-hides; its text colour is not read, and its background only makes the colour behind the
text unknown. ``@media`` is judged for a desktop screen 1024 to 1920 px wide: print and
phone-only rules are skipped, rules for every such screen are read like any other. Rules
that match only in a state a page does not load in (``:hover``, ``:focus``, ...) and
pseudo-elements are ignored.

Hidden: ``display: none``, ``visibility: hidden|collapse``, ``content-visibility: hidden``,
``opacity`` at most 0.05, a ``clip`` rect or ``clip-path`` that leaves at most a pixel,
``transform``/``scale`` to zero, off-screen offsets (``left``, ``top``, ``margin-left``,
``margin-top``, ``text-indent`` or a translation of -999px or more), a box at most a pixel
wide or high with ``overflow`` hidden, a font under 2px (inherited, so a child with its own
size shows again) and text in (about) its background's colour or transparent.

Time is linear in the page: selectors are indexed by their id, a class or their tag, and
the progress of descendant selectors is kept per open element, so no element looks at its
ancestors again. Every comparison is charged to a budget that grows with the page; a page
that spends it is refused (:class:`TooComplex`) rather than ingested unevaluated.

The modules, bottom first: ``budget`` and ``syntax`` (reading CSS text), ``values``
(lengths, colours), ``declarations``, ``hiding`` (which values hide), ``selectors``
(matching) and ``selector_parser``, ``media``, ``stylesheets`` (sheets into rules) and
``cascade`` (the rules over a page, element by element).
"""

from retrieval.css.budget import Budget, TooComplex
from retrieval.css.cascade import Cascade, State
from retrieval.css.media import ALWAYS, NEVER, SOMETIMES, media_state
from retrieval.css.stylesheets import Rule, parse_stylesheets

__all__ = [
    "ALWAYS",
    "NEVER",
    "SOMETIMES",
    "Budget",
    "Cascade",
    "Rule",
    "State",
    "TooComplex",
    "media_state",
    "parse_stylesheets",
]
