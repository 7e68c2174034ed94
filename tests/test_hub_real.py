"""Real weights from the real hub (``make test-real``): something only trained weights can do.

Each default model must rank the coffee photo's own caption above the rocket's (and the rocket photo's
above the coffee's), in English and, for multilingual models, in Russian too. Skipped only when the
hub cannot be reached; a model the hub does not know fails.
"""

import pytest

from labclip import hub, load_model, registry
from labclip.config import CAPTIONS_DIR
from labclip.data import load_captions

pytestmark = pytest.mark.slow

DEFAULTS = registry.default_models(["en", "ru"])


@pytest.fixture(scope="module")
def pair():
    if not hub.hub_reachable():
        pytest.skip("the Hugging Face hub is unreachable; real weights cannot be fetched")
    table = load_captions(CAPTIONS_DIR / "default.csv")
    rows = [table["image"].index(name) for name in ("coffee.png", "rocket.jpg")]
    return {column: [table[column][i] for i in rows] for column in ("path", "en", "ru")}


@pytest.mark.parametrize("name", DEFAULTS)
def test_real_weights_tell_coffee_from_rocket(pair, name):
    model = load_model(name, cache=False)
    assert not model.untrained and model.revision and len(model.revision) == 40
    images = model.encode_images(pair["path"])
    languages = ["en", "ru"] if registry.BY_ID[name].supports("ru") else ["en"]
    for lang in languages:
        sim = images @ model.encode_texts(pair[lang]).T
        assert sim[0, 0] > sim[0, 1] and sim[1, 1] > sim[1, 0], (name, lang, sim)


def test_real_translator_revision():
    if not hub.hub_reachable():
        pytest.skip("the Hugging Face hub is unreachable; real weights cannot be fetched")
    from labclip.translate import Translator

    translator = Translator("Helsinki-NLP/opus-mt-ru-en", cache=False)
    assert translator.revision and len(translator.revision) == 40
    assert "coffee" in translator.translate(["фотография чашки кофе"])[0].lower()
