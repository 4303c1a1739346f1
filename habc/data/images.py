"""Image encoding for storage (PNG by default, lossless) and batch decoding (numpy, no TF).

Images are stored as encoded bytes inside tfds ``Image`` features: plain tfds decodes them to
uint8 [H, W, 3] with no habc code, and the writer never needs TensorFlow (tfds would import it to
encode a numpy image itself). See docs/data.md for the measurements behind PNG.
"""

from __future__ import annotations

import numpy as np

try:  # OpenCV is ~2x faster than Pillow for these sizes; Pillow is the fallback.
  import cv2
except ImportError:  # pragma: no cover
  cv2 = None
from PIL import Image

FORMATS = ('png', 'jpeg')


def encode_image(image: np.ndarray, fmt: str = 'png', quality: int = 95) -> bytes:
  """uint8 [H, W, 3] -> encoded bytes."""
  if fmt not in FORMATS:
    raise ValueError(f'Unknown image format {fmt!r}; use one of {FORMATS}.')
  image = np.ascontiguousarray(image, np.uint8)
  if cv2 is not None:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == 'jpeg' else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode('.png' if fmt == 'png' else '.jpg', image[..., ::-1], params)
    if not ok:
      raise ValueError(f'Could not encode an image of shape {image.shape} as {fmt}.')
    return buf.tobytes()
  import io
  out = io.BytesIO()
  Image.fromarray(image).save(out, format=fmt.upper(), **({'quality': quality} if fmt == 'jpeg' else {}))
  return out.getvalue()


def decode_image(data: bytes) -> np.ndarray:
  """Encoded bytes -> uint8 [H, W, 3]."""
  if cv2 is not None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
      raise ValueError('Could not decode an image (corrupt or empty bytes).')
    return image[..., ::-1]
  import io
  return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))


def decode_images(encoded) -> np.ndarray:
  """A sequence of N encoded images -> uint8 [N, H, W, 3]."""
  return np.stack([decode_image(bytes(b)) for b in encoded])


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 [N, H, W, 3] -> uint8 [N, h, w, 3] (area interpolation when shrinking)."""
  height, width = size
  if images.shape[1:3] == (height, width):
    return images
  if cv2 is not None:
    interp = cv2.INTER_AREA if height <= images.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (width, height), interpolation=interp) for im in images])
  return np.stack([np.asarray(Image.fromarray(im).resize((width, height), Image.BILINEAR))
                   for im in images])
