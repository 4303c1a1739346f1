"""Image codec: lossless PNG, close JPEG, decoding in place, shape mismatches caught."""

import numpy as np
import pytest

from habc.data import images


@pytest.mark.parametrize('fast', [True, False])
def test_decode_into_buffer_and_shape_check(monkeypatch, fast):
  if not fast:
    monkeypatch.setattr(images, 'simplejpeg', None)
  rng = np.random.default_rng(0)
  frames = np.clip(np.linspace(0, 255, 16)[None, :, None] + rng.normal(0, 3, (3, 16, 16, 3)),
                   0, 255).astype(np.uint8)
  png = [images.encode_image(f, 'png') for f in frames]
  np.testing.assert_array_equal(images.decode_images(png), frames)
  stacked = np.zeros((3, 2, 16, 16, 3), np.uint8)
  images.decode_images([images.encode_image(f, 'jpeg') for f in frames], out=stacked[:, 1])
  assert not stacked[:, 0].any() and np.abs(stacked[:, 1].astype(int) - frames).mean() < 3
  for size in (8, 32):
    odd = png[:2] + [images.encode_image(np.zeros((size, size, 3), np.uint8), 'jpeg')]
    with pytest.raises(ValueError, match='Image 2'):
      images.decode_images(odd)
