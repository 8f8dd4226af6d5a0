"""The labelled corpus of Oolong-Synth: label sets, instance templates, and the label oracle.

Three label sets, each a small text-classification data set in the spirit of the ones
Oolong-synth draws on (TREC question types, review sentiment, AG-News topics):

* ``question_type`` (6 labels): abbreviation, description, entity, human, location, numeric;
* ``sentiment`` (3 labels): positive, negative, neutral;
* ``topic`` (5 labels): politics, sports, business, science, entertainment.

Every label has ten templates with slots (``{country}``, ``{item}``, ...) filled from word
lists shared by all labels of the set, so no filler gives a label away, and templates share
wording across labels ("What does ... mean?" is an abbreviation *and* a description
question; "expected", "worth" and "recommended" occur in positive and negative reviews), so
no single keyword decides a label (``tests/envs/test_oolong_synth.py`` measures this).

The templates are rendered once per process into a fixed pool of distinct instance texts
per label (:func:`corpus`), split 80/20 by text between the ``train`` and ``val`` splits.
Because every text in the pool is distinct and belongs to exactly one label, the **label
oracle** :func:`label_of` is a dictionary lookup: deterministic and exact.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

import numpy as np

CORPUS_SEED = 2511  # fixed: the pools, and so every document, are the same in every process
POOL_PER_TEMPLATE = 60  # distinct renders kept per template
VAL_FRACTION = 0.2
MAX_INSTANCE_CHARS = 110

_SHARED = {
    "country": ("France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "Peru", "Egypt", "India", "Chile",
                "Spain", "Vietnam", "Ghana", "Finland", "Mexico", "Turkey", "Poland", "Nepal", "Iceland", "Morocco"),
    "city": ("Lyon", "Osaka", "Recife", "Mombasa", "Calgary", "Bergen", "Cusco", "Luxor", "Pune", "Valparaiso",
             "Seville", "Hue", "Kumasi", "Tampere", "Oaxaca", "Izmir", "Gdansk", "Pokhara", "Akureyri", "Fez"),
}

#: label set -> (labels with one-line definitions, fillers, templates per label)
_SETS: dict[str, tuple[dict[str, str], dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]] = {
    "question_type": (
        {
            "abbreviation": "asks what an abbreviation stands for",
            "description": "asks for a definition, explanation or reason",
            "entity": "asks for a thing (animal, food, language, sport...)",
            "human": "asks for a person or group",
            "location": "asks for a place",
            "numeric": "asks for a number (count, date, size, price...)",
        },
        {
            **_SHARED,
            "abbr": ("NASA", "UNESCO", "NATO", "FIFA", "UNICEF", "OPEC", "HTML", "GPS", "DNA", "ATM", "PIN", "RSVP",
                     "AWOL", "CEO", "LED", "USB", "PDF", "VIP", "ASAP", "BBC", "IMF", "MRI", "LCD", "UFO"),
            "landmark": ("Eiffel Tower", "Golden Gate Bridge", "Colosseum", "Taj Mahal", "Great Wall", "Sydney Opera House",
                         "Statue of Liberty", "Alhambra", "Acropolis", "Hagia Sophia", "Tower Bridge", "Petronas Towers"),
            "device": ("telephone", "microwave oven", "bicycle", "thermometer", "light bulb", "radio", "typewriter",
                       "calculator", "sewing machine", "stethoscope", "compass", "barometer", "dishwasher", "refrigerator"),
            "device2": ("telescope", "microscope", "camera", "printer", "television", "clock", "loudspeaker", "kettle"),
            "person": ("Marie Curie", "Frida Kahlo", "Nikola Tesla", "Ada Lovelace", "Louis Armstrong", "Jane Austen",
                       "Pablo Neruda", "Miriam Makeba", "Alan Turing", "Wangari Maathai", "Yo-Yo Ma", "Hokusai"),
            "animal": ("panda", "kangaroo", "camel", "penguin", "owl", "elephant", "wolf", "dolphin", "parrot",
                       "tortoise", "bee", "horse"),
            "river": ("Danube", "Nile", "Amazon", "Mekong", "Rhine", "Volga", "Zambezi", "Ganges", "Yukon", "Murray"),
            "word": ("serendipity", "nostalgia", "ephemeral", "quarantine", "algorithm", "paradox", "hygge",
                     "tsunami", "placebo", "boycott", "jumbo", "robot"),
            "company": ("Toyota", "Nokia", "Lego", "Ikea", "Adidas", "Samsung", "Nintendo", "Heineken", "Volvo", "Rolex"),
            "discovery": ("penicillin", "radium", "the electron", "X-rays", "insulin", "oxygen", "the neutron",
                          "the first vaccine", "pulsars", "the ozone hole"),
        },
        {
            "abbreviation": (
                "What does {abbr} stand for?",
                "What is the full form of {abbr}?",
                "{abbr} is short for what?",
                "What do the letters {abbr} mean?",
                "Can you expand the abbreviation {abbr}?",
                "What is {abbr} an abbreviation of?",
                "In the name {abbr}, what does each letter stand for?",
                "My teacher in {city} used {abbr} in class; what is it short for?",
                "What words make up the acronym {abbr}?",
                "Is {abbr} short for something, and if so, what?",
            ),
            "description": (
                "What does the word {word} mean?",
                "Why does the {river} flood every spring?",
                "How does a {device} work?",
                "What is the difference between a {device} and a {device2}?",
                "Why do people who live in {country} celebrate the new year in spring?",
                "What is the origin of the word {word}?",
                "How do {animal}s find their way home?",
                "Why is the {landmark} so famous?",
                "What is a {device} used for?",
                "Can you explain what {person} is known for?",
            ),
            "entity": (
                "What animal appears on the flag of {country}?",
                "What is the national dish of {country}?",
                "Which instrument did {person} play?",
                "What kind of tree grows tallest in {country}?",
                "What material was the first {device} made of?",
                "Which sport is most popular in {country}?",
                "What do {animal}s eat in winter?",
                "What language is spoken in {city}?",
                "What did the workers who built the {landmark} eat?",
                "What colour is the {landmark} at night?",
            ),
            "human": (
                "Who invented the {device}?",
                "Which scientist discovered {discovery}?",
                "Who wrote the national anthem of {country}?",
                "Name the person who founded {company}.",
                "Which architect designed the {landmark}?",
                "Who taught {person} to read?",
                "What is the name of the explorer who first sailed up the {river}?",
                "Which team won the first football cup held in {country}?",
                "Who was the first mayor of {city}?",
                "Which family owned {company} before it went public?",
            ),
            "location": (
                "Where is the {landmark}?",
                "What is the capital of {country}?",
                "In which city was {person} born?",
                "Which country has the most {animal}s?",
                "Where does the {river} meet the sea?",
                "What is the largest lake in {country}?",
                "Where did the people who built the {landmark} come from?",
                "Which city is home to the head office of {company}?",
                "Where are most {device}s made today?",
                "What mountain range lies north of {city}?",
            ),
            "numeric": (
                "How many people live in {city}?",
                "When was the {landmark} built?",
                "How tall is the {landmark}?",
                "What year did {country} join the United Nations?",
                "How far is {city} from the {river}?",
                "What is the population of {country}?",
                "How much did the first {device} cost?",
                "What is the length of the {river}?",
                "How many {animal}s who live in zoos were born there?",
                "At what age did {person} die?",
            ),
        },
    ),
    "sentiment": (
        {
            "positive": "the writer is pleased",
            "negative": "the writer is unhappy",
            "neutral": "facts or questions, no judgement",
        },
        {
            "item": ("blender", "phone case", "hotel room", "laptop", "tent", "coffee maker", "pair of headphones",
                     "bike lock", "desk lamp", "backpack", "printer", "rice cooker", "rain jacket", "kettle",
                     "office chair", "vacuum cleaner", "yoga mat", "smart watch", "toaster", "suitcase"),
            "time": ("a week", "two days", "a month", "three weeks", "ten days", "two months", "a year", "six weeks"),
            "person": ("my sister", "a friend", "my neighbour", "the clerk", "my brother", "a colleague", "my uncle",
                       "the salesman"),
        },
        {
            "positive": (
                "I was worried the {item} would be bad, but it turned out great.",
                "Not a single problem with the {item} after {time} of daily use.",
                "Honestly, I can't complain: the {item} does everything I hoped.",
                "The {item} is far better than I expected for the price.",
                "{person} recommended the {item} and I am glad I listened.",
                "Would buy the {item} again without a second thought.",
                "After {time}, the {item} still works like the day it arrived.",
                "Five stars for the {item}; the support team was quick too.",
                "I expected nothing special, yet the {item} made my mornings easier.",
                "No regrets about the {item}, it was worth every cent.",
            ),
            "negative": (
                "I hoped the {item} would be great, but it broke within {time}.",
                "The {item} is far worse than I expected for the price.",
                "{person} recommended the {item}; I wish I had not listened.",
                "After {time}, the {item} stopped working and support never replied.",
                "I can't recommend the {item}, it was not worth a single cent.",
                "Would not buy the {item} again, not even on sale.",
                "The {item} looked nice in the photos, but it feels cheap and flimsy.",
                "One star: the {item} arrived late and scratched.",
                "Everything about the {item} was a letdown, from setup to daily use.",
                "I returned the {item} after {time}; it never worked properly.",
            ),
            "neutral": (
                "The {item} arrived after {time}, as the listing said.",
                "I have not used the {item} long enough to say if it is good or bad.",
                "The {item} comes in three colours and two sizes.",
                "{person} asked where I bought the {item}; it was the shop on the corner.",
                "The {item} does what the box says, nothing more and nothing less.",
                "Is the {item} compatible with the older model? The manual does not say.",
                "I bought the {item} to replace the one {person} borrowed.",
                "The price of the {item} went up a little since last month.",
                "Setup of the {item} took about {time} of evenings, which I expected.",
                "The {item} is the same model {person} uses at work.",
            ),
        },
    ),
    "topic": (
        {
            "politics": "government, elections, laws, diplomacy",
            "sports": "matches, teams, athletes, leagues",
            "business": "companies, markets, jobs, the economy",
            "science": "research, space, nature, technology",
            "entertainment": "films, music, television, books, art",
        },
        {
            **_SHARED,
            "team": ("the Harbor Kings", "Northfield Rovers", "the Red Falcons", "Lakeside United", "the Iron Wolves",
                     "Eastbridge City", "the Blue Herons", "Southport Athletic", "the Granite Bears", "Westmoor FC"),
            "company": ("Ardent Motors", "Bluepeak Foods", "Corvid Systems", "Delta Lumen", "Everfield Bank",
                        "Fennick Air", "Glasswing Labs", "Hollow Oak Retail", "Ironbark Energy", "Juniper Telecom"),
            "band": ("The Velvet Lanterns", "Paper Moons", "The Quiet Engines", "Saltwater Choir", "Neon Orchard",
                     "The Lost Pilots"),
            "leader": ("Anna Kovacs", "Tomas Reyes", "Leila Haddad", "Kenji Mori", "Grace Okafor", "Piotr Nowak",
                       "Sofia Lindqvist", "Omar Farouk"),
        },
        {
            "politics": (
                "Lawmakers in {country} passed the budget after a late-night vote.",
                "Opposition leader {leader} promised to cut taxes if elected next year.",
                "Voters in {city} go to the polls on Sunday in a close mayoral race.",
                "The prime minister of {country} reshuffled the cabinet on Friday.",
                "A new election law in {country} draws criticism from both parties.",
                "A senate committee will question {leader} about the stadium contract.",
                "Coalition talks in {country} stall over the energy bill.",
                "The president of {country} signed a trade agreement with its neighbours.",
                "{leader} wins the party vote and will run for mayor of {city}.",
                "Diplomats from {country} walked out of the summit over the border dispute.",
            ),
            "sports": (
                "{team} beat the champions 3-1 and move to the top of the table.",
                "The coach of {team} resigned after a run of six defeats.",
                "{team} signed a striker from {country} for a record fee.",
                "The marathon in {city} was won in a new course record.",
                "Fans in {city} celebrated as {team} lifted the cup.",
                "An injury keeps the captain of {team} out for the rest of the season.",
                "The final was delayed by rain, and {team} won on penalties.",
                "The league fined {team} for breaking its budget rules.",
                "{leader} scored twice as {team} won the derby in {city}.",
                "The Olympic team of {country} named its squad for the summer games.",
            ),
            "business": (
                "Shares of {company} fell 8 percent after weak quarterly results.",
                "{company} will cut 2,000 jobs as demand slows in {country}.",
                "{company} agreed to buy a rival for 4 billion dollars.",
                "Oil prices rose for a third day on supply fears.",
                "The central bank of {country} left interest rates unchanged.",
                "{company} opened its first store in {city}.",
                "Investors cheered as {company} raised its forecast for the year.",
                "A strike at the {company} plant in {city} halted production.",
                "{company} named {leader} as its new chief executive.",
                "The owners of {team} sold the club to {company} for a record sum.",
            ),
            "science": (
                "Researchers found water ice in a crater near the moon's south pole.",
                "A new battery design from a lab in {city} charges in five minutes.",
                "Astronomers in {country} spotted a comet that will pass Earth next spring.",
                "Scientists sequenced the genome of a rare deep-sea fish.",
                "The space agency of {country} launched a weather satellite.",
                "A study led by {leader} links warmer oceans to stronger storms.",
                "Engineers at {company} built a robot that learns to walk in an hour.",
                "A fossil found near {city} may be the oldest bird yet known.",
                "Physicists in {city} measured gravity with a record precision.",
                "Doctors in {country} tested a vaccine that needs no fridge.",
            ),
            "entertainment": (
                "The new film by {leader} tops the box office in its first weekend.",
                "{band} announced a world tour with a stop in {city}.",
                "A streaming series about a chess prodigy won three awards.",
                "A museum in {city} opens an exhibition of early video games.",
                "The actor who played the detective will return for a second season.",
                "Tickets for the music festival in {city} sold out in an hour.",
                "{band} recorded their new album in a church in {country}.",
                "A novel about an election in {country} will become a film next year.",
                "{band} won the song contest held in {city} this weekend.",
                "The documentary about {team} premieres at the film festival in {city}.",
            ),
        },
    ),
}

LABEL_SETS: tuple[str, ...] = tuple(_SETS)
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class LabelSet:
    """One classification data set: its labels (with definitions) and its instance pools.

    ``texts`` are the rendered instances (each ending in ``"\\n"``, ready to join into lines),
    ``label`` the label index of each text, and ``pools[split][k]`` the indices into ``texts``
    of label ``k``'s instances in ``split`` (``"train"`` or ``"val"``).
    """

    name: str
    labels: tuple[str, ...]
    definitions: dict[str, str]
    texts: np.ndarray  # object array of str
    lengths: np.ndarray  # int64, len of each text (newline included)
    label: np.ndarray  # int8
    pools: dict[str, tuple[np.ndarray, ...]]

    def describe(self) -> str:
        """The labels and their definitions, one per line (for prompts)."""
        return "\n".join(f"- {name}: {self.definitions[name]}" for name in self.labels)


def _render(template: str, fillers: dict[str, tuple[str, ...]], rng: np.random.Generator) -> list[str]:
    """Up to :data:`POOL_PER_TEMPLATE` distinct fillings of ``template``, drawn from all of them."""
    slots = list(dict.fromkeys(_SLOT.findall(template)))
    combos = list(itertools.product(*(fillers[s] for s in slots)))
    keep = rng.permutation(len(combos))[:POOL_PER_TEMPLATE]
    out = []
    for i in sorted(keep.tolist()):
        text = template.format(**dict(zip(slots, combos[i])))
        out.append(text[0].upper() + text[1:])
    return out


@functools.cache
def corpus() -> dict[str, LabelSet]:
    """Every label set with its rendered pools (built once per process, from :data:`CORPUS_SEED`)."""
    rng = np.random.default_rng(CORPUS_SEED)
    sets: dict[str, LabelSet] = {}
    for name, (definitions, fillers, templates) in _SETS.items():
        labels = tuple(definitions)
        texts: list[str] = []
        label: list[int] = []
        pools: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        for k, lab in enumerate(labels):
            rendered = [t for template in templates[lab] for t in _render(template, fillers, rng)]
            order = rng.permutation(len(rendered))
            n_val = max(1, round(len(rendered) * VAL_FRACTION))
            idx = np.arange(len(texts), len(texts) + len(rendered))
            pools["val"].append(np.sort(idx[order[:n_val]]))
            pools["train"].append(np.sort(idx[order[n_val:]]))
            texts.extend(rendered)
            label.extend([k] * len(rendered))
        for t in texts:
            if not t.isascii() or "||" in t or "\n" in t or len(t) > MAX_INSTANCE_CHARS:
                raise AssertionError(f"bad instance template text: {t!r}")  # a template bug, caught at import time
        arr = np.empty(len(texts), dtype=object)
        arr[:] = [t + "\n" for t in texts]
        sets[name] = LabelSet(
            name=name,
            labels=labels,
            definitions=dict(definitions),
            texts=arr,
            lengths=np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=len(texts)),
            label=np.asarray(label, dtype=np.int8),
            pools={s: tuple(p) for s, p in pools.items()},
        )
    _check_unique(sets)
    return sets


def _check_unique(sets: dict[str, LabelSet]) -> None:
    seen: dict[str, tuple[str, int]] = {}
    for s in sets.values():
        for text, k in zip(s.texts.tolist(), s.label.tolist()):
            if text in seen and seen[text] != (s.name, k):
                raise AssertionError(f"instance text {text!r} has two labels")  # a template bug
            seen[text] = (s.name, k)


@functools.cache
def _label_index() -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for s in corpus().values():
        for text, k in zip(s.texts.tolist(), s.label.tolist()):
            out[text[:-1]] = (s.name, s.labels[k])
    return out


def label_of(instance: str) -> str:
    """The label oracle: the label of an instance text (exact; KeyError for a text not in the corpus).

    >>> label_of("What does NASA stand for?")
    'abbreviation'
    """
    return _label_index()[instance.strip()][1]
