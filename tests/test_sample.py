import io
import json

import numpy as np
import pytest
from PIL import Image

from datasets_build.errors import DataError
from datasets_build.sample import (
    Sample,
    assistant_turn,
    pack_images,
    packed_count,
    unpack_images,
    upgrade_record,
    user_turn,
)
from tests.helpers import legacy_record


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
    assert set(rec) == {"__key__", "json", "images.npy", "targets.npy"}
    assert isinstance(json.loads(rec["json"])["meta"], str)  # one Arrow type for every corpus
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


def test_images_member_round_trips_bytes_and_refuses_what_numpy_would_strip():
    items = [b"\xff\xd8jpeg\x00body\xff\xd9", b"\x89PNG short"]
    packed = pack_images(items)
    assert unpack_images(packed) == items
    assert packed_count(packed) == 2
    assert np.load(io.BytesIO(packed), allow_pickle=False).dtype.kind == "S"
    assert unpack_images(pack_images([])) == []
    assert packed_count(pack_images([])) == 0
    with pytest.raises(DataError, match="NUL"):
        pack_images([b"ends in\x00"])
    with pytest.raises(DataError, match=r"images\.npy"):
        unpack_images(b"not npy", "shard.tar:k")
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="1-D bytes"):
        packed_count(buf.getvalue())


def test_string_content_is_stored_as_one_text_part():
    s = _sample(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], images=[])
    back = Sample.decode(s.encode())
    assert back.messages == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Yo"}]},
    ]


def test_layout_1_records_still_decode_and_upgrade_with_the_same_image_bytes():
    arr = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    s = _sample(images=[arr, arr[::-1]], messages=[user_turn("q", 2), assistant_turn("a")], target=arr[..., 0])
    old = legacy_record(s)
    assert set(old) == {"__key__", "json", "0.jpg", "1.jpg", "target.png"}
    back = Sample.decode(old)
    assert back.meta == s.meta
    assert len(back.images) == 2
    assert back.target is not None
    new = upgrade_record(old)
    assert set(new) == {"__key__", "json", "images.npy", "targets.npy"}
    assert unpack_images(new["images.npy"]) == [old["0.jpg"], old["1.jpg"]]
    assert unpack_images(new["targets.npy"]) == [old["target.png"]]
    assert Sample.decode(new).meta == s.meta
    assert upgrade_record(new) == new
    with pytest.raises(DataError, match="schema_version"):
        Sample.decode({"__key__": "k", "json": b'{"schema_version": 7, "messages": []}'})
