"""A fictional company generated from a seed: a domain no model can know, new on every run.

The Quillfeather demo is one fixed domain, and a recipe tuned on it proves nothing about the
next one. Here every seed gives another company, other products and places, other numbers,
and another draw of which facts it has. Each fact comes with

* a short document stating it (with one sentence of filler, as real pages have),
* two user questions, which users ask and correct (the training side),
* a held-out paraphrase that shares as few words with those questions as it can, which only
  the benchmark asks (the model must have learnt the fact, not one wording of it),
* the reference answer, and a ``key``: the short string an answer must contain.

``bench/adaptation.py`` plays the loop on it; ``bench/prompt_layouts.py`` measures prompts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from trainer.demo import Question

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kl", "l", "m", "n", "p", "pr", "r",
           "s", "st", "t", "tr", "v", "z", "th", "sh")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ae", "io", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "x", "th", "m", "nd", "sk")
_COMPANY_KINDS = ("Outfitters", "Goods", "Works", "Supply", "Labs", "Trading", "Makers")
_PRODUCT_KINDS = ("speaker", "lamp", "scooter", "headset", "blender", "camera", "kettle",
                  "backpack", "drone", "heater")  # fmt: skip
_FIRST_NAMES = ("Ines", "Tomas", "Yara", "Kofi", "Mirela", "Anselm", "Priya", "Oskar", "Lena",
                "Darius", "Noor", "Felix")  # fmt: skip
_COUNTRIES = ("Veldoria", "Ostrava Bay", "Marrenland", "Quelth", "Sorvania", "Brindle Isles")
_FILLERS = (
    "{C} updates this page whenever the policy changes.",
    "Staff at every {C} shop can answer questions about this.",
    "This applies to all customers of {C}, online and in person.",
    "{C} publishes the same information in its printed catalogue.",
)


@dataclass(frozen=True)
class Fact:
    id: str
    title: str
    statement: str  # the sentence in the document
    answer: str  # the reference answer a support agent gives
    key: str  # what a right answer must contain
    questions: tuple[str, str]
    paraphrase: str  # held out: never asked by the users, never trained on


@dataclass(frozen=True)
class Domain:
    seed: int
    company: str
    facts: list[Fact]

    @property
    def collection(self) -> str:
        return f"domain-{self.seed}"

    def documents(self) -> list[dict[str, str]]:
        return [
            {
                "id": fact.id,
                "source": f"{fact.id}.md",
                "markdown": f"# {self.company}: {fact.title}\n\n{fact.statement}\n",
            }
            for fact in self.facts
        ]

    def questions(self) -> list[Question]:
        """What users ask: both questions of every fact."""
        return [
            Question(fact.id, question, fact.answer)
            for fact in self.facts
            for question in fact.questions
        ]

    def paraphrases(self) -> list[Question]:
        """The held-out paraphrase of every fact."""
        return [Question(fact.id, fact.paraphrase, fact.answer) for fact in self.facts]

    def key(self, fact_id: str) -> str:
        return next(fact.key for fact in self.facts if fact.id == fact_id)


# Each template: (id, title, statement, answer, key, question 1, question 2, paraphrase).
# Slots: {C} company, {P} a product, {city}, {person}, {name}, {country}, {n} a number.
_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("return-window", "Returns",
     "{C} accepts returns of unused products within {n} days of delivery.",
     "You can return an unused product within {n} days of delivery.", "{n} days",
     "How many days do I have to return something to {C}?",
     "What is the return window at {C}?",
     "If I change my mind after my parcel arrives, how long until it is too late to send "
     "it back?"),
    ("warranty", "Warranty",
     "Every {P} carries a {n}-year warranty against manufacturing defects.",
     "The {P} has a {n}-year warranty.", "{n} year",
     "How long is the warranty on the {P}?",
     "What warranty comes with the {P}?",
     "For how many years will a faulty {P} be covered?"),
    ("founded", "History",
     "{C} was founded in {year} by a group of engineers.",
     "{C} was founded in {year}.", "{year}",
     "When was {C} founded?",
     "In what year did {C} start?",
     "Since when has the company been around?"),
    ("headquarters", "Offices",
     "{C} has its headquarters in {city}.",
     "{C} is headquartered in {city}.", "{city}",
     "Where is {C} headquartered?",
     "In which city is the head office of {C}?",
     "What town is the main base of the firm located in?"),
    ("chief-executive", "Leadership",
     "The chief executive of {C} is {person}.",
     "The CEO of {C} is {person}.", "{person}",
     "Who is the CEO of {C}?",
     "Who runs {C}?",
     "Whose name is at the top of the company as its leader?"),
    ("support-hours", "Phone support",
     "Phone support is open from {h1} a.m. to {h2} p.m. on weekdays.",
     "Phone support is open from {h1} a.m. to {h2} p.m. on weekdays.", "{h1} a",
     "What are the phone support hours of {C}?",
     "When can I call {C} support?",
     "At what time does the helpline start taking calls on a Monday?"),
    ("free-shipping", "Shipping costs",
     "Orders over {n} euros ship free of charge.",
     "Shipping is free on orders over {n} euros.", "{n} euros",
     "How much do I need to spend for free shipping at {C}?",
     "What is the free shipping threshold at {C}?",
     "Above what basket total does delivery stop costing anything?"),
    ("price", "Prices",
     "The {P} costs {n} euros.",
     "The {P} costs {n} euros.", "{n} euros",
     "How much does the {P} cost?",
     "What is the price of the {P}?",
     "What would I pay to buy a {P}?"),
    ("battery", "Battery",
     "The {P} runs for {n} hours on one charge.",
     "The {P} runs for {n} hours on one charge.", "{n} hours",
     "How long does the battery of the {P} last?",
     "What is the battery life of the {P}?",
     "On a full charge, how many hours can the {P} keep going?"),
    ("weight", "Specifications",
     "The {P} weighs {n} grams.",
     "The {P} weighs {n} grams.", "{n} grams",
     "How much does the {P} weigh?",
     "What is the weight of the {P}?",
     "How heavy is the {P}?"),
    ("loyalty-points", "Loyalty club",
     "Members of the {C} loyalty club earn {n} points for every euro spent.",
     "Loyalty club members earn {n} points per euro.", "{n} points",
     "How many loyalty points do I earn per euro at {C}?",
     "What is the points rate of the {C} loyalty club?",
     "For each euro I pay, what reward do members collect?"),
    ("shop-count", "Shops",
     "{C} runs {n} shops across {country}.",
     "{C} has {n} shops.", "{n} shops",
     "How many stores does {C} have?",
     "How many shops does {C} operate?",
     "What is the number of physical locations selling the brand?"),
    ("refund-time", "Refunds",
     "Refunds reach the original payment method within {n} business days.",
     "Refunds arrive within {n} business days.", "{n} business days",
     "How long does a refund from {C} take?",
     "When will I get my money back from {C}?",
     "After a return is accepted, how many working days pass before the payment is "
     "reversed?"),
    ("repair-fee", "Repairs",
     "A standard repair at {C} costs a flat {n} euros.",
     "A standard repair costs {n} euros.", "{n} euros",
     "How much is a repair at {C}?",
     "What does {C} charge to fix a broken product?",
     "What is the flat fee when a technician mends my device?"),
    ("trial", "Free trial",
     "New customers can try the {P} free for {n} days.",
     "You can try the {P} free for {n} days.", "{n} days",
     "How long is the free trial of the {P}?",
     "For how many days can I test the {P} for free?",
     "Is there a no-cost period to evaluate the {P}, and how long is it?"),
    ("student-discount", "Discounts",
     "Students get {n} percent off with a valid student card.",
     "Students get {n} percent off.", "{n} percent",
     "What discount do students get at {C}?",
     "Does {C} offer a student discount?",
     "How much cheaper is it if I show a university ID?"),
    ("delivery-time", "Delivery",
     "Standard delivery within {country} takes {n} working days.",
     "Standard delivery takes {n} working days.", "{n} working days",
     "How long does standard delivery take at {C}?",
     "When will my {C} order arrive?",
     "How many days until the parcel reaches my door with the normal option?"),
    ("mascot", "Brand",
     "The {C} mascot is a fox named {name}.",
     "The mascot is a fox named {name}.", "{name}",
     "What is the name of the {C} mascot?",
     "What is the {C} mascot called?",
     "Which character represents the brand, and what is it called?"),
    ("membership-fee", "Premium membership",
     "Premium membership costs {n} euros per year.",
     "Premium membership costs {n} euros per year.", "{n} euros",
     "How much is premium membership at {C}?",
     "What is the yearly fee for {C} premium?",
     "What do I pay annually to be a top-tier member?"),
    ("capacity", "Capacity",
     "The {P} holds up to {n} litres.",
     "The {P} holds up to {n} litres.", "{n} litres",
     "What is the capacity of the {P}?",
     "How many litres does the {P} hold?",
     "How much can I fit inside the {P}?"),
    ("warehouse", "Warehouse",
     "All orders ship from the {C} warehouse in {city}.",
     "Orders ship from the warehouse in {city}.", "{city}",
     "Where does {C} ship orders from?",
     "Where is the {C} warehouse?",
     "From which town do parcels leave?"),
    ("app", "Mobile app",
     "The {C} mobile app is called {name}.",
     "The app is called {name}.", "{name}",
     "What is the {C} app called?",
     "What is the name of the {C} mobile app?",
     "Which smartphone program should I install to manage my orders?"),
    ("gift-card", "Gift cards",
     "Gift cards from {C} are valid for {n} months.",
     "Gift cards are valid for {n} months.", "{n} months",
     "How long is a {C} gift card valid?",
     "When does a {C} gift card expire?",
     "For how many months can I still spend a present voucher?"),
    ("service-plan", "Service plan",
     "The {P} service plan costs {n} euros a month.",
     "The {P} service plan costs {n} euros a month.", "{n} euros",
     "How much is the service plan for the {P}?",
     "What does the {P} service plan cost?",
     "What is the monthly charge for ongoing care of my {P}?"),
)  # fmt: skip


def generate_domain(seed: int, facts: int = 20) -> Domain:
    """A new company with ``facts`` facts (at most one per template), the same for one seed."""
    if not 1 <= facts <= len(_TEMPLATES):
        raise ValueError(f"facts must be between 1 and {len(_TEMPLATES)}")
    rng = random.Random(seed)
    names = _Names(rng)
    company = f"{names.word()} {rng.choice(_COMPANY_KINDS)}"
    products = [f"{names.word()} {kind}" for kind in rng.sample(_PRODUCT_KINDS, 3)]
    numbers = _Numbers(rng)
    chosen = rng.sample(_TEMPLATES, facts)
    return Domain(seed, company, [_fact(t, company, products, names, numbers, rng) for t in chosen])


def _fact(
    template: tuple[str, ...],
    company: str,
    products: list[str],
    names: _Names,
    numbers: _Numbers,
    rng: random.Random,
) -> Fact:
    fact_id, title, statement, answer, key, first, second, paraphrase = template
    makers: dict[str, Callable[[], str]] = {
        "C": lambda: company,
        "P": lambda: rng.choice(products),
        "city": names.word,
        "person": lambda: f"{rng.choice(_FIRST_NAMES)} {names.word()}",
        "name": names.word,
        "country": lambda: rng.choice(_COUNTRIES),
        "n": lambda: str(numbers.draw(3, 95)),
        "year": lambda: str(numbers.draw(1952, 2019)),
        "h1": lambda: str(numbers.draw(6, 10)),
        "h2": lambda: str(numbers.draw(4, 9)),
    }
    # Only the slots this template uses are drawn: the small hour ranges would run dry.
    used = set(re.findall(r"\{(\w+)\}", "".join(template)))
    slots = {slot: make() for slot, make in makers.items() if slot in used | {"C"}}
    filler = rng.choice(_FILLERS).format(**slots)
    return Fact(
        fact_id,
        title,
        statement.format(**slots) + " " + filler,
        answer.format(**slots),
        key.format(**slots),
        (first.format(**slots), second.format(**slots)),
        paraphrase.format(**slots),
    )


class _Names:
    """Pronounceable made-up words, never the same twice in one domain."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self) -> str:
        while True:
            syllables = self.rng.randint(2, 3)
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
            word = ("".join(parts) + self.rng.choice(_CODAS)).capitalize()
            if word not in self.used and len(word) >= 5:
                self.used.add(word)
                return word


class _Numbers:
    """Numbers distinct within a domain, so that no fact's number answers another's question."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[int] = set()

    def draw(self, low: int, high: int) -> int:
        while True:
            value = self.rng.randint(low, high)
            if value not in self.used:
                self.used.add(value)
                return value
