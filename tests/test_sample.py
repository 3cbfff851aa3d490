import numpy as np
import pytest
from PIL import Image

from datasets_build.errors import DataError
from datasets_build.sample import Sample, assistant_turn, user_turn


def _sample(**kw):
    img = Image.fromarray(np.full((16, 16, 3), 200, np.uint8))
    base = {
        "key": "s-000001",
        "messages": [user_turn("How far?"), assistant_turn("12 cm")],
        "images": [img],
        "task": "distance",
        "source": "demo",
        "meta": {"points": [[0.1, 0.2, 0.3]]},
    }
    base.update(kw)
    return Sample(**base)


def test_encode_decode_round_trip_png_with_target():
    arr = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    target = np.arange(256, dtype=np.uint16).reshape(16, 16) * 200
    s = _sample(images=[arr], image_format="png", target=target)
    rec = s.encode()
    assert set(rec) == {"__key__", "json", "0.png", "target.png"}
    back = Sample.decode(rec)
    np.testing.assert_array_equal(np.asarray(back.images[0]), arr)
    np.testing.assert_array_equal(np.asarray(back.target), target)
    assert back.messages == s.messages
    assert back.meta == s.meta
    assert back.task == "distance"


def test_image_count_must_match_parts():
    with pytest.raises(DataError, match="1 image parts but 0 images"):
        _sample(images=[])


@pytest.mark.parametrize("key", ["a.b", "a/b", ""])
def test_bad_keys(key):
    with pytest.raises(DataError, match="__key__"):
        _sample(key=key)


def test_bad_messages():
    with pytest.raises(DataError, match=r"messages\[0\]\.role"):
        _sample(messages=[{"role": "robot", "content": "x"}], images=[])
    with pytest.raises(DataError, match="content"):
        _sample(messages=[{"role": "user", "content": [{"type": "video"}]}], images=[])
