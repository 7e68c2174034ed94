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


def test_real_siglip2_equals_its_own_processor_with_lowercased_text(pair):
    """The default multilingual model: labclip's captions (lower-cased, padded to 64) and images (the config's
    square resize) give the embeddings of transformers' own processor fed the text SigLIP 2 was trained on."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoProcessor

    from labclip.images import load_image

    name = registry.DEFAULT_MULTILINGUAL
    model = load_model(name, cache=False, precision="fp32")
    texts = ["A Photo of a Cup of COFFEE", *pair["ru"]]
    processor = AutoProcessor.from_pretrained(name)
    inputs = processor(text=[t.lower() for t in texts], images=[load_image(p) for p in pair["path"]],
                       padding="max_length", max_length=64, return_tensors="pt")
    with torch.no_grad():
        out = AutoModel.from_pretrained(name).eval()(**inputs)
    unit = lambda x: torch.nn.functional.normalize(x.float(), dim=-1).numpy()  # noqa: E731
    np.testing.assert_allclose(model.encode_texts(texts), unit(out.text_embeds), atol=1e-4)
    np.testing.assert_allclose(model.encode_images(pair["path"]), unit(out.image_embeds), atol=2e-2)
