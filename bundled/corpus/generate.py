#!/usr/bin/env python3
"""Generates bundled/corpus/{train,heldout}.jsonl: the pretraining text of the
bundled model, written for this repository.

A probabilistic grammar of short English texts, one paragraph per row: pages of
short film reviews, longer reviews, plot summaries, conversations about films, and
reviews and short stories of everyday things (restaurants, hotels, books,
concerts, trips, household goods). Reviews carry their sentiment in their
wording (adjectives, verbs, negation, contrast with "but") and most end with a
verdict sentence agreeing with it ("It was great.", "I hated it.", ...). Nothing
is taken from another corpus: every word list and template is in this file.

Two choices make sentiment learnable within the bundled model's short pretraining
(three epochs, see bundled/README.md), so that the model reads sentiment zero-shot:
- a page of short reviews holds one sentiment (a page of praise or of complaints),
  so the whole context before a verdict agrees with it; with pages of mixed
  sentiment the model must first learn to attend to the current review alone, and
  in trial runs it had not learned to read sentiment after 1,600 steps;
- "It was great." and "It was terrible." are the most common verdicts (weight 120
  of 186 and of 182), the continuations the SST-2 prompt scores.
Pages make 70% of the rows.

Deterministic: `python3 bundled/corpus/generate.py` rewrites both files byte for
byte (Python's `random.Random` with the seed below; written with Python 3.11).
Checks before writing: no row contains a sentence of bundled/sst2-mini (compared
case-insensitively), no row repeats, every row has MIN_UNITS to MAX_UNITS units
and at most MAX_CHARS characters. Neither the tests nor `maskscape reproduce` run
this script; the tests check the committed files.
"""

import json
import random
import re
import sys
from pathlib import Path

SEED = 16
ROWS = 6400
HELDOUT_EVERY = 20  # every 20th row (5%) goes to heldout.jsonl
# Row lengths in words and punctuation marks (the bundled tokenizer makes about 1.2
# tokens of each)
MIN_UNITS, TARGET_LOW, TARGET_HIGH, MAX_UNITS = 48, 54, 64, 68
# and in characters, so that every row fits the model's 128 positions under the
# 1000-token tokenizer trained on these rows (rare words split into several tokens:
# without the cap, rows of 68 units can exceed 127 tokens)
MAX_CHARS = 300

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent / "sst2-mini"

# --------------------------------------------------------------------------- words

FIRST = """Anna Ben Carla David Elena Felix Grace Hugo Iris Jonas Kate Leo Maya Nina Omar
Paula Quinn Rosa Sam Tara Umar Vera Will Yusuf Zoe Adam Bella Chris Dora Emil Fatima
George Hana Ivan Julia Karim Lena Marco Nora Oscar Priya Rafael Sofia Tom Ursula Victor
Wendy Ali Beatriz Chen Daniel Eva Frank Gloria Henry Ines Jack Laila Mateo Noor Olga
Pedro Ruth Simon Tessa""".split()
LAST = """Adler Baker Cruz Dalton Ellis Fischer Garcia Hart Ito Jensen Kowalski Lund Moreau
Novak Okafor Park Quint Rossi Silva Tanaka Varga Walsh Young Zimmer Abbott Brennan Costa
Duarte Evans Farrell Greene Holm Ivers Kaur Lindqvist Mendes Nakamura Osei Petrov Reyes
Sato Torres Weber""".split()

TITLE_ADJ = """Silent Last Silver Broken Hidden Golden Distant Long Midnight Paper Glass Iron
Quiet Winter Summer Red Blue Northern Lost Burning Empty Secret Little Wild Frozen Bright
Hollow Crooked Velvet Final""".split()
TITLE_NOUN = """Garden River Road House Letter Harbor Crown Kingdom Promise Island Bridge
Mountain Station Orchard Lighthouse Mirror Storm City Valley Door Summer Shore Forest Engine
Window Diary Circus Hotel Tide Signal Frontier Theater Compass Lantern""".split()
TITLE_PLACE = """Lisbon Cairo Oslo Marseille Havana Kyoto Dublin Tangier Prague Lagos Lima
Vienna Naples Tbilisi Quebec""".split()

GENRES = [
    "comedy", "drama", "thriller", "horror film", "documentary", "romance", "western",
    "musical", "animated film", "science fiction film", "war film", "mystery",
    "family film", "crime story", "biopic", "sequel", "remake", "road movie",
    "romantic comedy", "spy thriller", "ghost story", "costume drama", "heist film",
    "coming-of-age story", "satire", "period piece", "courtroom drama", "adventure",
    "fantasy", "short film",
]

# aspects: (name, plural, category)
FILM_ASPECTS = [
    ("acting", False, "perf"), ("lead performance", False, "perf"), ("cast", False, "perf"),
    ("supporting cast", False, "perf"), ("performances", True, "perf"),
    ("young star", False, "perf"), ("villain", False, "perf"), ("two leads", True, "perf"),
    ("plot", False, "story"), ("story", False, "story"), ("script", False, "story"),
    ("screenplay", False, "story"), ("dialogue", False, "story"), ("premise", False, "story"),
    ("ending", False, "story"), ("twist", False, "story"), ("first act", False, "story"),
    ("final act", False, "story"), ("characters", True, "story"), ("jokes", True, "story"),
    ("humor", False, "story"), ("romance", False, "story"),
    ("direction", False, "craft"), ("editing", False, "craft"), ("pacing", False, "craft"),
    ("camera work", False, "craft"), ("cinematography", False, "craft"),
    ("visuals", True, "craft"), ("special effects", True, "craft"),
    ("action scenes", True, "craft"), ("costumes", True, "craft"), ("sets", True, "craft"),
    ("fight scenes", True, "craft"), ("animation", False, "craft"),
    ("music", False, "sound"), ("score", False, "sound"), ("soundtrack", False, "sound"),
    ("songs", True, "sound"), ("sound design", False, "sound"),
]

GENERAL = {
    "pos": """great wonderful excellent brilliant superb terrific lovely marvelous
outstanding fine strong impressive remarkable memorable beautiful fresh confident assured
inventive original elegant polished delightful first-rate enjoyable entertaining compelling
exquisite magical rewarding spectacular fascinating lively inspired""".split(),
    "neg": """terrible awful dreadful poor weak bad dull clumsy lazy sloppy messy tired stale
bland forgettable flat lifeless mediocre disappointing uninspired ugly cheap amateurish
second-rate stupid pretentious dreary tiresome derivative soulless ridiculous lackluster
uneven mindless incoherent laughable""".split(),
}
BY_CATEGORY = {
    "perf": {
        "pos": """convincing natural moving fearless nuanced magnetic charming funny heartfelt
touching warm believable committed""".split(),
        "neg": """wooden stiff unconvincing miscast hammy shrill awkward robotic bored
overacted""".split(),
    },
    "story": {
        "pos": """clever gripping smart witty funny surprising moving tight thoughtful touching
intelligent satisfying engaging sharp honest""".split(),
        "neg": """predictable confusing silly thin muddled contrived pointless shallow unfunny
preachy far-fetched tedious boring cliched""".split(),
    },
    "craft": {
        "pos": """stunning gorgeous crisp brisk precise stylish breathtaking tight thrilling
dazzling graceful vivid""".split(),
        "neg": """sluggish choppy glacial murky chaotic slow plodding garish dizzying
lifeless""".split(),
    },
    "sound": {
        "pos": "haunting catchy rousing beautiful gorgeous stirring perfect lovely".split(),
        "neg": "grating irritating shrill forgettable relentless intrusive syrupy loud".split(),
    },
}
INTENSIFIERS = {
    "pos": "very truly really remarkably wonderfully genuinely consistently quite".split(),
    "neg": "very truly really painfully hopelessly utterly consistently rather".split(),
}
FILM_ADJ = {  # attributive, for "a ... film"
    "pos": """great wonderful brilliant moving charming delightful gripping clever beautiful
funny tender thrilling gorgeous smart warm memorable powerful witty joyful heartfelt
stylish confident sharp enjoyable entertaining absorbing engrossing hilarious poignant
uplifting inspiring playful gentle wise bittersweet exciting irresistible sweet
spellbinding""".split(),
    "neg": """terrible awful dull boring tedious clumsy lazy predictable weak stale bland
messy confusing forgettable silly cheap empty shallow hollow pointless bloated overlong
lifeless joyless stupid pretentious cynical smug dreary depressing exhausting embarrassing
cloying grim aimless incoherent derivative soulless ridiculous mindless unpleasant
mean-spirited""".split(),
}
FILM_VP = {
    "pos": [
        "held my attention from start to finish", "made me laugh out loud",
        "moved me to tears", "kept me guessing until the end", "left me smiling",
        "deserves every award it gets", "rewards a second viewing",
        "earns every one of its big moments", "never wastes a scene",
        "stayed with me for days", "had the whole audience cheering",
        "gets better with every scene", "finds beauty in ordinary things",
        "handles its subject with care", "is worth every minute",
    ],
    "neg": [
        "made me check my watch", "put me to sleep", "drags on far too long",
        "goes nowhere", "wastes a talented cast", "falls apart in the last act",
        "left me cold", "tries too hard and fails", "never finds its rhythm",
        "feels twice as long as it is", "forgets its own story halfway through",
        "had people walking out", "insults the intelligence of its audience",
        "mistakes noise for excitement", "is not worth the ticket",
    ],
}
ADVERB_MADE = {
    "pos": "beautifully wonderfully brilliantly tightly carefully lovingly superbly "
           "cleverly gracefully expertly smartly".split(),
    "neg": "badly poorly lazily clumsily sloppily carelessly awkwardly terribly "
           "cheaply woodenly".split(),
}
PARTICIPLES = "acted shot written edited directed made paced told observed crafted played".split()
VERDICT_NOUNS = {
    "pos": ["a masterpiece", "a triumph", "a delight", "a joy", "a treat", "a gem",
            "a pleasure", "a small miracle", "a crowd-pleaser", "a must-see", "a knockout",
            "a breath of fresh air"],
    "neg": ["a mess", "a disaster", "a chore", "a slog", "a bore", "a waste", "a letdown",
            "a failure", "an embarrassment", "a snooze", "a misfire", "a muddle"],
}
VERBS = {
    "pos": ["shines", "soars", "sparkles", "glows", "works", "delivers", "succeeds",
            "dazzles", "charms", "surprises", "sings", "crackles with energy"],
    "neg": ["drags", "sinks", "stumbles", "fails", "falls flat", "misfires", "meanders",
            "plods along", "sputters", "collapses", "sleepwalks", "grates"],
}
PLURAL_VERBS = {"shines": "shine", "soars": "soar", "sparkles": "sparkle", "glows": "glow",
                "works": "work", "delivers": "deliver", "succeeds": "succeed",
                "dazzles": "dazzle", "charms": "charm", "surprises": "surprise",
                "sings": "sing", "crackles with energy": "crackle with energy",
                "drags": "drag", "sinks": "sink", "stumbles": "stumble", "fails": "fail",
                "falls flat": "fall flat", "misfires": "misfire", "meanders": "meander",
                "plods along": "plod along", "sputters": "sputter", "collapses": "collapse",
                "sleepwalks": "sleepwalk", "grates": "grate"}
WHERE = ["from start to finish", "in every scene", "from the first minute",
         "for most of its running time", "right to the end"]
FEELS_LIKE = {
    "pos": ["a warm hug", "a breath of fresh air", "a long summer afternoon", "a gift",
            "a good conversation with an old friend", "a day at the seaside"],
    "neg": ["homework", "a long lecture", "a bad dream", "a chore", "a television pilot",
            "a long wait at the dentist", "a rough draft"],
}
TOPICS = ["friendship", "family", "grief", "growing old", "first love", "ambition",
          "small-town life", "marriage", "war", "music", "childhood", "fame", "loss",
          "forgiveness", "work", "two brothers", "a mother and her daughter", "faith",
          "a marriage in trouble", "a city at night"]
STUDY = ["portrait of", "look at", "study of", "story about", "tale of", "meditation on"]
TOO = ["long", "slow", "loud", "silly", "dull", "cold", "messy", "pleased with itself",
       "busy", "sour"]
ENOUGH = ["smart", "funny", "warm", "charming", "clever", "moving", "gripping"]
AUDIENCE = {
    "pos": ["The audience laughed all the way through.", "The whole theater cheered.",
            "People clapped at the end.", "Half the audience was in tears.",
            "Kids will love it.", "Fans of the book will be delighted.",
            "Nobody wanted it to end."],
    "neg": ["The audience groaned.", "People checked their phones.",
            "Several people walked out.", "Kids will be bored.",
            "Fans of the book will be disappointed.", "Nobody laughed.",
            "Everyone wanted it to end."],
}
HAS_NOUNS = {"pos": "heart humor warmth charm tension beauty wit energy".split()}
LACK_NOUNS = "tension humor heart chemistry suspense energy wit charm".split()
DIRECTS = {
    "pos": ["real skill", "great care", "wit and confidence", "a sure hand", "style and warmth",
            "a sharp eye", "patience and grace"],
    "neg": ["a heavy hand", "no sense of pace", "little care", "no feel for comedy",
            "no clear idea of what the film is about", "a shaky hand"],
}
FEEL = {
    "pos": ["smile", "laugh", "cry", "want to see it again", "think", "hold my breath"],
    "neg": ["yawn", "cringe", "wince", "want to leave", "reach for my phone", "sigh"],
}
LOVED = {
    "pos": ["I loved every minute of it.", "I loved the whole thing.", "I enjoyed it a lot.",
            "I adored this film.", "I would happily watch it again.",
            "I was hooked from the first minute."],
    "neg": ["I hated every minute of it.", "I disliked the whole thing.",
            "I regret buying a ticket.", "I wanted my money back.",
            "I nearly fell asleep.", "I could not wait for the credits."],
}
RECOMMEND = {
    "pos": ["I would recommend it to anyone.", "Do not miss it.", "See it on the big screen.",
            "Go and see it.", "Bring the whole family.", "It is worth the price of a ticket."],
    "neg": ["I cannot recommend it.", "Skip this one.", "Save your money.",
            "Wait until it is on television.", "Do not bother.", "Stay at home."],
}
RATINGS = {
    "pos": ["Five stars.", "Four stars.", "Four out of five.", "Five out of five.",
            "Nine out of ten.", "Ten out of ten.", "Eight out of ten."],
    "neg": ["One star.", "Two stars.", "One out of five.", "Two out of five.",
            "Two out of ten.", "Three out of ten.", "Zero stars."],
}
COMPARE = {
    "pos": ["It is even better than the first film.", "It is better than the book.",
            "It is the best film I have seen this year.", "It is a step up for the director."],
    "neg": ["It is much worse than the first film.", "It is far worse than the book.",
            "It is the worst film I have seen this year.", "It is a step down for the director."],
}
# The closing verdicts: "It was great." and "It was terrible." are the commonest.
VERDICTS = {
    "pos": [("It was great.", 120), ("It was wonderful.", 8), ("It was excellent.", 6),
            ("It was brilliant.", 5), ("It was amazing.", 5), ("It was fantastic.", 5),
            ("It was a great film.", 5), ("It was great fun.", 4), ("I loved it.", 8),
            ("Highly recommended.", 5), ("It was really great.", 3), ("It was so good.", 4),
            ("It was good.", 5), ("It was lovely.", 3)],
    "neg": [("It was terrible.", 120), ("It was awful.", 10), ("It was dreadful.", 5),
            ("It was boring.", 6), ("It was bad.", 5), ("It was a terrible film.", 4),
            ("It was a waste of time.", 6), ("I hated it.", 6), ("Not recommended.", 4),
            ("It was really terrible.", 3), ("It was so bad.", 4), ("It was horrible.", 5),
            ("It was a mess.", 4)],
}

# plot summaries
OCCUPATIONS = """teacher detective nurse farmer pilot baker journalist painter lawyer
fisherman mechanic doctor chef musician student soldier librarian photographer scientist
shopkeeper boxer dancer inventor sailor""".split()
PEOPLE_ADJ = """retired young lonely stubborn shy ambitious widowed clumsy brilliant restless
kind tired gifted""".split()
GROUPS = ["two sisters", "two brothers", "an old married couple", "a group of friends",
          "three cousins", "a family of five", "two rival chefs", "a band of thieves",
          "a team of scientists", "two strangers", "a father and his daughter",
          "a mother and her son"]
GOALS = [
    "sets out to find a lost brother", "tries to save a failing bakery",
    "must solve a murder in a snowbound hotel", "plans one last robbery",
    "falls in love with a stranger on a train", "returns home after twenty years",
    "tries to win a baking contest", "searches for a missing painting",
    "takes a long road trip across the country", "opens a small bookshop",
    "trains for a boxing match", "tries to stop a war between two villages",
    "discovers a secret in an old diary", "escapes from a prison island",
    "builds a boat to cross the sea", "starts a band in a garage",
    "fights to keep the family farm", "looks after a stray dog",
    "investigates strange lights over the lake", "runs for mayor of a small town",
]
PLACES = ["in a small coastal town", "in a quiet mountain village", "in a busy city",
          "on a distant planet", "in a crumbling old hotel", "on a remote island",
          "in the desert", "in a snowy valley", "in a seaside town", "on a fishing boat",
          "in a big old house", "in the suburbs", "on a farm", "at a boarding school"]
TIMES = ["in the summer of 1962", "in the winter of 1890", "in the near future",
         "during the war", "over one long weekend", "over a single night",
         "in the present day", "in the 1970s", "over twenty years"]
EVENTS = [
    "a letter arrives from an old friend", "the power goes out", "a storm hits the town",
    "the money goes missing", "a stranger knocks on the door", "the factory closes",
    "a body is found in the garden", "the bridge collapses", "a child disappears",
    "an old rival comes back", "the ship runs aground", "a fire breaks out at the mill",
]
REACTIONS = [
    "has to make a difficult choice", "begins to question everything",
    "decides to stay and fight", "must ask for help", "turns to an unlikely ally",
    "is forced to leave home", "starts to uncover the truth", "has to face the past",
]
MEETS = ["a kind old neighbor", "a mysterious traveler", "a talking crow",
         "a retired spy", "a stubborn mule", "a young runaway", "a famous singer",
         "a clever street kid", "a grumpy inventor", "a lonely lighthouse keeper"]
TRAITS = ["knows more than he says", "has secrets of her own", "changes everything",
          "becomes a close friend", "cannot be trusted", "teaches them to laugh again",
          "needs help just as badly"]

# everyday reviews: topic -> (subjects, aspects); an aspect is
# (name, plural, positive words, negative words)
FOOD = ("delicious fresh tasty perfect excellent", "bland stale cold greasy salty soggy burnt")
EVERYDAY = {
    "restaurant": (
        ["the new restaurant on the corner", "the little cafe by the station",
         "the noodle bar downtown", "the pizza place near the park", "the bakery on Main Street",
         "the seafood restaurant by the harbor"],
        [("food", False, *FOOD), ("soup", False, "rich warm delicious perfect", "cold bland watery salty"),
         ("bread", False, "fresh warm crusty soft", "stale hard dry burnt"),
         ("coffee", False, "strong smooth hot perfect", "bitter weak cold burnt"),
         ("service", False, "friendly quick warm attentive", "slow rude careless chaotic"),
         ("staff", False, "friendly kind helpful cheerful", "rude unhelpful grumpy careless"),
         ("dessert", False, "delicious light perfect lovely", "heavy dry bland sickly"),
         ("pasta", False, *FOOD), ("portions", True, "generous large fair", "tiny stingy small"),
         ("prices", True, "fair low reasonable", "high silly outrageous"),
         ("fries", True, "crisp hot golden", "soggy cold greasy")],
    ),
    "hotel": (
        ["the hotel", "the guest house by the lake", "the hostel in the old town",
         "the seaside hotel", "the cabin we rented"],
        [("room", False, "clean quiet spacious bright comfortable", "dirty noisy cramped dark shabby"),
         ("bed", False, "comfortable soft clean huge", "hard lumpy narrow creaky"),
         ("view", False, "stunning lovely wide beautiful", "ugly grim dull bleak"),
         ("staff", False, "friendly kind helpful cheerful", "rude unhelpful grumpy careless"),
         ("breakfast", False, "generous fresh delicious hearty", "stale cold meager bland"),
         ("location", False, "convenient central quiet perfect", "remote noisy awkward grim"),
         ("showers", True, "hot strong clean", "cold weak dirty"),
         ("walls", True, "thick solid quiet", "thin damp grubby")],
    ),
    "book": (
        ["the new novel", "the book my sister lent me", "the mystery novel",
         "the memoir", "the short story collection", "the travel guide"],
        [("writing", False, "clever elegant vivid honest sharp", "clumsy flat wordy dull lazy"),
         ("characters", True, "vivid believable funny moving", "flat shallow silly dull"),
         ("plot", False, "gripping clever surprising tight", "predictable confusing thin silly"),
         ("ending", False, "moving satisfying clever perfect", "rushed silly flat predictable"),
         ("prose", False, "elegant vivid clear graceful", "clumsy dense wordy tedious"),
         ("chapters", True, "short gripping lively", "long tedious repetitive")],
    ),
    "concert": (
        ["the concert", "the show at the old theater", "the festival",
         "the jazz night", "the school play", "the opera"],
        [("band", False, "tight brilliant lively joyful", "sloppy tired dull lazy"),
         ("singer", False, "brilliant moving warm stunning", "flat tired shrill weak"),
         ("sound", False, "clear rich crisp perfect", "muddy harsh thin awful"),
         ("crowd", False, "friendly joyful lively warm", "rude rowdy sullen pushy"),
         ("songs", True, "catchy moving joyful lovely", "dull forgettable tired grating"),
         ("seats", True, "comfortable roomy good", "cramped hard awful"),
         ("encore", False, "long joyful electric", "short limp lazy")],
    ),
    "product": (
        ["the new phone", "the kettle", "these shoes", "the winter jacket",
         "the vacuum cleaner", "the bicycle", "the laptop", "the blender"],
        [("battery", False, "reliable strong durable", "weak short unreliable"),
         ("design", False, "simple elegant smart clever", "ugly clumsy awkward cheap"),
         ("price", False, "fair low reasonable", "high silly outrageous"),
         ("build", False, "sturdy solid careful", "flimsy fragile cheap"),
         ("fit", False, "comfortable perfect snug", "loose awkward uncomfortable"),
         ("instructions", True, "clear simple helpful", "confusing useless vague")],
    ),
    "trip": (
        ["the coast", "the museum", "the mountains", "the zoo", "the old harbor",
         "the botanical garden", "the island"],
        [("weather", False, "sunny warm calm perfect", "rainy cold windy miserable"),
         ("beach", False, "clean quiet beautiful empty", "dirty crowded noisy grim"),
         ("guide", False, "friendly funny clever patient", "rude boring grumpy lazy"),
         ("train", False, "punctual quiet comfortable fast", "late crowded dirty slow"),
         ("trails", True, "beautiful quiet peaceful", "muddy steep crowded"),
         ("exhibits", True, "fascinating rich wonderful", "dull tired dusty"),
         ("crowds", True, "small friendly calm", "huge rude pushy")],
    ),
}
LEADS = {
    "restaurant": "We had dinner at {subject} last {day}.",
    "hotel": "We stayed at {subject} last week.",
    "book": "I finished {subject} on {day}.",
    "concert": "We went to {subject} on {day}.",
    "product": "I bought {subject} last month.",
    "trip": "We visited {subject} last {day}.",
}
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
ROUTINE = [
    "made a pot of coffee", "walked the dog around the block", "read the paper in the kitchen",
    "took the bus into town", "bought bread, apples and a bunch of flowers",
    "called an old friend", "watered the plants on the balcony", "fixed the kitchen tap",
    "baked a loaf of bread", "wrote a long letter", "cleaned the windows",
    "went for a swim", "met a friend for lunch", "tidied the garden",
    "watched an old film on television", "cooked dinner for the family",
    "repaired a bicycle", "painted the fence", "went to the library",
    "played chess in the park",
]
WEATHER = ["It was raining.", "The sun was out.", "The wind was cold.",
           "It was a warm afternoon.", "Snow had fallen overnight.", "The sky was grey."]


# ------------------------------------------------------------------------ helpers

def units(text):
    """Words and punctuation marks: the length rows are measured in."""
    return len(re.findall(r"[A-Za-z]+|[^A-Za-z\s]", text))


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def with_article(phrase):
    return f"{article(phrase)} {phrase}"


def cap(text):
    return text[0].upper() + text[1:]


def plural_verb(phrase):
    """`sets out to ...` -> `set out to ...`: the first verb for a plural subject."""
    verb, rest = phrase.split(" ", 1)
    irregular = {"has": "have", "is": "are", "must": "must", "tries": "try",
                 "searches": "search", "fixes": "fix"}
    verb = irregular.get(verb, verb[:-1] if verb.endswith("s") else verb)
    return f"{verb} {rest}"


def flip(s):
    return "neg" if s == "pos" else "pos"


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def pick(self, items):
        return self.r.choice(items)

    def weighted(self, pairs):
        return self.r.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]

    def chance(self, p):
        return self.r.random() < p

    # names and titles
    def person(self):
        return f"{self.pick(FIRST)} {self.pick(LAST)}"

    def title(self):
        form = self.r.randrange(5)
        if form == 0:
            return f"The {self.pick(TITLE_ADJ)} {self.pick(TITLE_NOUN)}"
        if form == 1:
            return f"{self.pick(TITLE_ADJ)} {self.pick(TITLE_NOUN)}"
        if form == 2:
            return f"The {self.pick(TITLE_NOUN)}"
        if form == 3:
            return f"Night Train to {self.pick(TITLE_PLACE)}"
        return f"Letters from {self.pick(TITLE_PLACE)}"

    # film review sentences
    def aspect_adj(self, category, s):
        if self.chance(0.55):
            return self.pick(BY_CATEGORY[category][s])
        return self.pick(GENERAL[s])

    def be(self, plural, past):
        return ("were" if plural else "was") if past else ("are" if plural else "is")

    def film_sentence(self, s, past=False):
        """One sentence of a film review whose overall sentiment is `s`."""
        name, plural, cat = self.pick(FILM_ASPECTS)
        be = self.be(plural, past)
        the = f"the {name}"
        kind = self.r.randrange(30)
        if kind <= 2:
            if self.chance(0.4):
                return f"{cap(the)} {be} {self.pick(INTENSIFIERS[s])} {self.aspect_adj(cat, s)}."
            return f"{cap(the)} {be} {self.aspect_adj(cat, s)}."
        if kind == 3:
            a = self.aspect_adj(cat, s)
            b = self.aspect_adj(cat, s)
            if a == b:
                return f"{cap(the)} {be} {a}."
            return f"{cap(the)} {be} {a} and {b}."
        if kind == 4:
            name2, plural2, cat2 = self.pick(FILM_ASPECTS)
            if name2 == name:
                return f"{cap(the)} {be} {self.aspect_adj(cat, s)}."
            be2 = self.be(plural2, past)
            return (f"{cap(the)} {be} {self.aspect_adj(cat, s)}, and the {name2} {be2} "
                    f"{self.aspect_adj(cat2, s)}.")
        if kind == 5:
            # contrast: the clause after "but" carries the sentiment
            name2, plural2, cat2 = self.pick(FILM_ASPECTS)
            if name2 == name:
                return f"{cap(the)} {be} {self.aspect_adj(cat, s)}."
            be2 = self.be(plural2, past)
            if self.chance(0.5):
                return (f"{cap(the)} {be} {self.aspect_adj(cat, flip(s))}, but the {name2} "
                        f"{be2} {self.aspect_adj(cat2, s)}.")
            return (f"Although {the} {be} {self.aspect_adj(cat, flip(s))}, the {name2} "
                    f"{be2} {self.aspect_adj(cat2, s)}.")
        if kind == 6:
            # negation
            if s == "pos":
                neg = self.pick(BY_CATEGORY[cat]["neg"])
                form = self.pick(["never", "anything but"])
                return f"{cap(the)} {be} {form} {neg}."
            pos = self.pick(BY_CATEGORY[cat]["pos"])
            form = self.pick(["not", "never", "not at all", "far from"])
            if form == "not at all":
                return f"{cap(the)} {be} not {pos} at all."
            return f"{cap(the)} {be} {form} {pos}."
        if kind == 7:
            genre = self.pick(GENRES)
            adj = self.pick(FILM_ADJ[s])
            if self.chance(0.5):
                adj2 = self.pick(FILM_ADJ[s])
                if adj2 != adj:
                    adj = f"{adj}, {adj2}"
            verb = "was" if past else "is"
            return self.pick([f"It {verb} {with_article(adj)} {genre}.",
                              f"{cap(with_article(adj))} {genre}.",
                              f"This {verb} {with_article(adj)} {genre}.",
                              f"What {with_article(adj)} {genre}!"])
        if kind == 8:
            subject = self.pick(["The film", "This movie", "The movie", "It", self.title()])
            vp = self.pick(FILM_VP[s])
            return f"{subject} {vp}."
        if kind == 9:
            adj = self.pick(BY_CATEGORY["perf"][s] + GENERAL[s])
            role = self.pick(["the mother", "the detective", "the villain", "a young widow",
                              "an aging boxer", "the captain", "a struggling singer",
                              "the old king", "a small-town doctor", "the younger sister"])
            gives = "gave" if past else "gives"
            return f"{self.person()} {gives} {with_article(adj)} performance as {role}."
        if kind == 10:
            return self.pick(LOVED[s])
        if kind == 11:
            directs = "directed" if past else "directs"
            return f"{self.person()} {directs} with {self.pick(DIRECTS[s])}."
        if kind == 12:
            return self.pick(RECOMMEND[s])
        if kind == 13:
            if s == "pos":
                return self.pick([f"There is so much {self.pick(HAS_NOUNS['pos'])} in this film.",
                                  f"It is full of {self.pick(HAS_NOUNS['pos'])}.",
                                  f"The film has real {self.pick(HAS_NOUNS['pos'])}."])
            return self.pick([f"There is no {self.pick(LACK_NOUNS)} at all.",
                              f"The film has no {self.pick(LACK_NOUNS)}.",
                              f"It has very little {self.pick(LACK_NOUNS)}."])
        if kind == 14:
            return self.pick(RATINGS[s])
        if kind == 15:
            return self.pick(COMPARE[s])
        if kind == 16:
            made = "made" if past or self.chance(0.5) else "makes"
            return f"{cap(the)} {made} me {self.pick(FEEL[s])}."
        return self.more_film_sentence(kind, s, past)

    def more_film_sentence(self, kind, s, past):
        """The rest of `film_sentence`'s kinds."""
        verb = "was" if past else "is"
        genre = self.pick(GENRES)
        if kind == 17:
            adj = self.pick(FILM_ADJ[s])
            return self.pick([f"Simply {adj}.", f"{cap(adj)} from start to finish.",
                              f"{cap(adj)}, {self.pick(FILM_ADJ[s])} and "
                              f"{self.pick(FILM_ADJ[s])}."])
        if kind == 18:
            made = f"{self.pick(ADVERB_MADE[s])} {self.pick(PARTICIPLES)}"
            return self.pick([f"It {verb} {made}.", f"{cap(with_article(made))} {genre}.",
                              f"This {verb} {with_article(made)} {genre}.",
                              f"The whole film {verb} {made}."])
        if kind == 19:
            noun = self.pick(VERDICT_NOUNS[s])
            return self.pick([f"It {verb} {noun}.", f"The whole thing {verb} {noun}.",
                              f"{self.title()} {verb} {noun} from start to finish.",
                              f"What {noun}!", f"This {genre} {verb} {noun}."])
        if kind == 20:
            name, plural, _ = self.pick(FILM_ASPECTS)
            v = self.pick(VERBS[s])
            if plural:
                v = PLURAL_VERBS[v]
            if past:
                return f"The {name} {'were' if plural else 'was'} {self.pick(FILM_ADJ[s])}."
            return f"The {name} {v}."
        if kind == 21:
            v = self.pick(VERBS[s])
            return self.pick([f"The film {v} {self.pick(WHERE)}.",
                              f"{self.person()} {v} as {self.pick(['the lead', 'the villain', 'the mother', 'the detective'])}."])
        if kind == 22:
            feels = "felt" if past else "feels"
            return self.pick([f"It {feels} like {self.pick(FEELS_LIKE[s])}.",
                              f"Watching it {feels} like {self.pick(FEELS_LIKE[s])}."])
        if kind == 23:
            adj = self.pick(FILM_ADJ[s])
            return f"It {verb} {with_article(adj)} {self.pick(STUDY)} {self.pick(TOPICS)}."
        if kind == 24:
            if s == "pos":
                a, b = self.pick(FILM_ADJ["pos"]), self.pick(FILM_ADJ["pos"])
                return self.pick([f"It {verb} both {a} and {b}.",
                                  f"There {verb} nothing {self.pick(FILM_ADJ['neg'])} about it.",
                                  f"Everything about it works.",
                                  f"{cap(with_article(a))} {genre} without a single dull moment."])
            a, b = self.pick(FILM_ADJ["pos"]), self.pick(FILM_ADJ["pos"])
            return self.pick([f"It {verb} neither {a} nor {b}.",
                              f"There {verb} nothing {a} about it.", "Nothing in it works.",
                              f"{cap(with_article(self.pick(FILM_ADJ['neg'])))} {genre} "
                              f"without a single {self.pick(['laugh', 'scare', 'good idea', 'surprise'])}."])
        if kind == 25:
            if s == "pos":
                return f"It {verb} {self.pick(ENOUGH)} enough to win over anyone."
            return f"It {verb} too {self.pick(TOO)} to enjoy."
        if kind == 26:
            return self.pick(AUDIENCE[s])
        if kind == 27:
            return f"Rarely has {with_article(genre)} been this {self.pick(FILM_ADJ[s])}."
        if kind == 28:
            if s == "pos":
                return self.pick(["Even the smallest roles are well played.",
                                  f"Even the {self.pick(['music', 'costumes', 'credits', 'sets'])} "
                                  f"{'are' if self.chance(0.5) else 'feel'} {self.pick(GENERAL['pos'])}.",
                                  f"It is the kind of {genre} they rarely make any more."])
            return self.pick([f"Even {self.person()} cannot save it.",
                              f"Even the {self.pick(['music', 'costumes', 'credits', 'sets'])} "
                              f"{'are' if self.chance(0.5) else 'feel'} {self.pick(GENERAL['neg'])}.",
                              f"It is the kind of {genre} you forget on the way home."])
        # kind 29: the whole film with an intensified adjective
        return f"The film {verb} {self.pick(INTENSIFIERS[s])} {self.pick(FILM_ADJ[s])}."

    def verdict(self, s, film=True):
        pairs = VERDICTS[s] if film else [p for p in VERDICTS[s] if "film" not in p[0]]
        return self.weighted(pairs)

    def short_review(self, s, past=None):
        if past is None:
            past = self.chance(0.25)
        n = self.weighted([(1, 5), (2, 3), (3, 2)])
        sentences = [self.film_sentence(s, past) for _ in range(n)]
        if self.chance(0.9):
            sentences.append(self.verdict(s))
        return sentences

    # row kinds ------------------------------------------------------------
    def review_page(self):
        parts = []
        if self.chance(0.3):
            parts.append(self.pick([f"Reviews of {self.title()}.",
                                    f"What our readers said about {self.title()}.",
                                    "Short reviews from this week.",
                                    f"Audience reviews: {self.title()}."]))
        s = self.pick(["pos", "neg"])
        return parts, lambda: self.short_review(s)

    def long_review(self):
        s = self.pick(["pos", "neg"])
        past = self.chance(0.3)
        title, genre = self.title(), self.pick(GENRES)
        opening = self.pick([
            f"{title} is the new {genre} from {self.person()}.",
            f"I saw {title} last {self.pick(DAYS)}.",
            f"{title} opened this week.",
            f"We went to see {title}, {with_article(genre)} starring {self.person()}.",
        ])
        # the verdict closes the review: `row` appends it once the body is long enough
        self.closing_sentence = self.verdict(s)
        return [opening], lambda: [self.film_sentence(s, past)]

    def plot_summary(self):
        title, genre = self.title(), self.pick(GENRES)
        if self.chance(0.6):
            hero = with_article(f"{self.pick(PEOPLE_ADJ)} {self.pick(OCCUPATIONS)}")
            who = f"{hero} who {self.pick(GOALS)}"
            pronoun = self.pick(["she", "he"])
        else:
            who = f"{self.pick(GROUPS)} who {plural_verb(self.pick(GOALS))}"
            pronoun = "they"
        parts = [f"{title} is {with_article(genre)} about {who} {self.pick(PLACES)}."]
        reaction = self.pick(REACTIONS)
        meets = "meets"
        if pronoun == "they":
            reaction, meets = plural_verb(reaction), "meet"
        extra = [
            f"When {self.pick(EVENTS)}, {pronoun} {reaction}.",
            f"Along the way, {pronoun} {meets} {self.pick(MEETS)}, who {self.pick(TRAITS)}.",
            f"The story takes place {self.pick(TIMES)}.",
            f"The film was directed by {self.person()} and stars {self.person()} and "
            f"{self.person()}.",
            f"It runs {self.r.randrange(80, 160)} minutes.",
            f"It is based on a novel by {self.person()}.",
            f"It opens in theaters on {self.pick(DAYS)}.",
        ]
        self.r.shuffle(extra)
        parts += extra[: self.r.randrange(2, 5)]
        if self.chance(0.4):
            parts += self.short_review(self.pick(["pos", "neg"]))
        return parts, None

    def film_dialogue(self):
        a, b = self.pick(FIRST), self.pick(FIRST)
        while b == a:
            b = self.pick(FIRST)

        def exchange():
            asker, answerer = (a, b) if self.chance(0.5) else (b, a)
            s = self.pick(["pos", "neg"])
            film = self.chance(0.8)
            if film:
                title = self.title()
                question = self.pick([f"\"Did you see {title}?\" asked {asker}.",
                                      f"\"How was {title}?\" asked {asker}.",
                                      f"{asker} asked, \"What did you think of {title}?\"",
                                      f"\"Was {title} any good?\" asked {asker}."])
                said = [self.verdict(s)] + [self.film_sentence(s, True)
                                            for _ in range(self.r.randrange(1, 3))]
            else:
                topic = self.pick(sorted(EVERYDAY))
                subject = self.pick(EVERYDAY[topic][0])
                question = f"\"How was {subject}?\" asked {asker}."
                said = [self.verdict(s, film=False), self.everyday_sentence(topic, s)]
            out = [question, f"{answerer} said, \"{' '.join(said)}\""]
            if self.chance(0.4):
                if film:
                    follow = self.pick(["\"Should I see it?\"", "\"Really?\"", "\"Why?\""])
                    reply = (self.pick(RECOMMEND[s]) if "see it" in follow
                             else self.film_sentence(s, True))
                else:
                    follow = self.pick(["\"Would you go back?\"", "\"Really?\"", "\"Why?\""])
                    reply = (self.closing(topic, s) if "back" in follow
                             else self.everyday_sentence(topic, s))
                out += [follow, f"\"{reply}\""]
            return out

        return [], exchange

    def everyday_sentence(self, topic, s):
        aspects = EVERYDAY[topic][1]
        name, plural, pos, neg = self.pick(aspects)
        words = (pos if s == "pos" else neg).split()
        be = "were" if plural else "was"
        kind = self.r.randrange(6)
        if kind <= 2:
            return f"The {name} {be} {self.pick(words)}."
        if kind == 3:
            a, b = self.pick(words), self.pick(words)
            return f"The {name} {be} {a} and {b}." if a != b else f"The {name} {be} {a}."
        if kind == 4:
            other = (neg if s == "pos" else pos).split()
            name2, plural2, pos2, neg2 = self.pick(aspects)
            if name2 == name:
                return f"The {name} {be} {self.pick(words)}."
            words2 = (pos2 if s == "pos" else neg2).split()
            be2 = "were" if plural2 else "was"
            return (f"The {name} {be} {self.pick(other)}, but the {name2} {be2} "
                    f"{self.pick(words2)}.")
        return self.closing(topic, s)

    def closing(self, topic, s):
        """A closing remark about a thing of `topic`."""
        again = {"restaurant": "go back", "hotel": "stay there again",
                 "concert": "go again", "trip": "go again", "book": "read it again",
                 "product": "buy it again"}[topic]
        if s == "pos":
            return self.pick([f"I would {again}.", f"I would happily {again}.",
                              "I have no complaints at all.", "It was worth every penny.",
                              "Everyone was happy."])
        return self.pick([f"I would not {again}.", f"I would never {again}.",
                          "Nobody was happy.", "I want a refund.", "It was not worth the money."])

    def everyday_review(self):
        topic = self.pick(sorted(EVERYDAY))
        subjects = EVERYDAY[topic][0]

        def one():
            s = self.pick(["pos", "neg"])
            subject = self.pick(subjects)
            day = self.pick(DAYS)
            lead = self.pick([LEADS[topic].format(subject=subject, day=day),
                              f"A few words about {subject}.", f"On {subject}:"])
            out = [lead] + [self.everyday_sentence(topic, s)
                            for _ in range(self.r.randrange(1, 4))]
            if self.chance(0.8):
                out.append(self.verdict(s, film=False))
            return out

        return [], one

    def everyday_story(self):
        name = self.pick(FIRST)
        pronoun = self.pick(["she", "he"])
        parts = [f"On {self.pick(DAYS)} morning, {name} {self.pick(ROUTINE)}."]
        if self.chance(0.5):
            parts.append(self.pick(WEATHER))

        def more():
            if self.chance(0.2):
                topic = self.pick(["restaurant", "concert", "trip"])
                s = self.pick(["pos", "neg"])
                return [f"Later {pronoun} went to {self.pick(EVERYDAY[topic][0])}.",
                        self.everyday_sentence(topic, s), self.verdict(s, film=False)]
            then = self.pick(["Then", "After that,", "In the afternoon,", "Later,",
                              "In the evening,", "Before lunch,"])
            return [f"{then} {pronoun} {self.pick(ROUTINE)}."]

        return parts, more

    def row(self):
        kind = self.weighted([("page", 70), ("long", 10), ("plot", 5), ("dialogue", 5),
                              ("everyday", 5), ("story", 5)])
        make = {"page": self.review_page, "long": self.long_review, "plot": self.plot_summary,
                "dialogue": self.film_dialogue, "everyday": self.everyday_review,
                "story": self.everyday_story}[kind]
        self.closing_sentence = None
        parts, more = make()
        target = self.r.randrange(TARGET_LOW, TARGET_HIGH)
        text = " ".join(parts)
        if more is None:
            return kind, text
        closing = f" {self.closing_sentence}" if self.closing_sentence else ""
        while units(text + closing) < target:
            extra = " ".join(more())
            candidate = f"{text} {extra}" if text else extra
            if units(candidate + closing) > MAX_UNITS and units(text + closing) >= MIN_UNITS:
                break
            text = candidate
        return kind, text + closing


def main():
    sst2 = []
    for split in ("train", "dev"):
        with open(SST2 / f"{split}.jsonl", encoding="utf-8") as f:
            sst2 += [json.loads(line)["sentence"].lower() for line in f if line.strip()]
    gen = Gen(SEED)
    rows, seen = [], set()
    counts, rejected = {}, {"sst2": 0, "repeat": 0, "length": 0}
    while len(rows) < ROWS:
        kind, text = gen.row()
        low = text.lower()
        if any(sentence in low for sentence in sst2):
            rejected["sst2"] += 1
            continue
        if text in seen:
            rejected["repeat"] += 1
            continue
        if not MIN_UNITS <= units(text) <= MAX_UNITS or len(text) > MAX_CHARS:
            rejected["length"] += 1
            continue
        seen.add(text)
        rows.append(text)
        counts[kind] = counts.get(kind, 0) + 1
    train = [t for i, t in enumerate(rows) if (i + 1) % HELDOUT_EVERY]
    heldout = [t for i, t in enumerate(rows) if not (i + 1) % HELDOUT_EVERY]
    for name, texts in (("train", train), ("heldout", heldout)):
        with open(HERE / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for text in texts:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    chars = sum(map(len, rows))
    print(f"{len(train)} train + {len(heldout)} held-out rows, {chars} characters; "
          f"kinds {dict(sorted(counts.items()))}; rejected {rejected}", file=sys.stderr)


if __name__ == "__main__":
    main()
