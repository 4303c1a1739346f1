"""Image encoding for storage (JPEG q95 4:4:4 by default; PNG for lossless) and batch decoding.

Images are stored as encoded bytes inside tfds ``Image`` features: plain tfds decodes them to
uint8 [H, W, 3] with no habc code, and the writer never needs TensorFlow (tfds would import it to
encode a numpy image itself). See docs/data.md for the measurements behind the choice.
"""

from __future__ import annotations

import numpy as np

try:  # OpenCV is ~2x faster than Pillow for these sizes; Pillow is the fallback.
  import cv2
except ImportError:  # pragma: no cover
  cv2 = None
try:  # libjpeg-turbo decoding straight into a buffer: ~2x faster than OpenCV at 64x64.
  import simplejpeg
except ImportError:  # Optional: OpenCV does the same, slower.
  simplejpeg = None
from PIL import Image

FORMATS = ('png', 'jpeg')


def encode_image(image: np.ndarray, fmt: str = 'jpeg', quality: int = 95) -> bytes:
  """uint8 [H, W, 3] -> encoded bytes."""
  if fmt not in FORMATS:
    raise ValueError(f'Unknown image format {fmt!r}; use one of {FORMATS}.')
  image = np.ascontiguousarray(image, np.uint8)
  if cv2 is not None:
    # JPEG without chroma subsampling: 4:2:0 smears the colours of small objects (errors up to
    # 200 levels at 64x64 on rendered scenes; 4:4:4 stays under 30). See docs/data.md.
    params = ([cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
               cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444] if fmt == 'jpeg'
              else [cv2.IMWRITE_PNG_COMPRESSION, 3])
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


def decode_images(encoded, out: np.ndarray | None = None) -> np.ndarray:
  """N encoded images of one size -> uint8 [N, H, W, 3].

  Args:
    encoded: a sequence of N encoded images.
    out: optional uint8 [N, H, W, 3] to decode into (each out[i] must be contiguous, e.g. a
      camera slice ``stacked[:, c]`` of a [T, C, H, W, 3] array).
  """
  for i, data in enumerate(encoded):
    data = bytes(data) if not isinstance(data, (bytes, memoryview)) else data
    if simplejpeg is not None and data[:2] == b'\xff\xd8':
      if out is None:
        first = simplejpeg.decode_jpeg(data, colorspace='RGB')
        out = np.empty((len(encoded),) + first.shape, np.uint8)
        out[0] = first
        if i == 0:
          continue
      try:
        image = simplejpeg.decode_jpeg(data, colorspace='RGB', buffer=out[i])
      except ValueError as e:
        raise ValueError(f'Image {i}: {e} (expected shape {out.shape[1:]}).') from e
      if image.shape != out.shape[1:]:
        raise ValueError(f'Image {i} has shape {image.shape}, expected {out.shape[1:]}.')
      continue
    if cv2 is not None:
      image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
      if image is None:
        raise ValueError(f'Could not decode image {i} (corrupt or empty bytes).')
      if out is None:
        out = np.empty((len(encoded),) + image.shape, np.uint8)
      if image.shape != out.shape[1:]:
        raise ValueError(f'Image {i} has shape {image.shape}, expected {out.shape[1:]}.')
      cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=out[i])  # 6x faster than a ::-1 copy.
    else:
      image = decode_image(data)
      if out is None:
        out = np.empty((len(encoded),) + image.shape, np.uint8)
      out[i] = image
  if out is None:
    return np.zeros((0, 0, 0, 3), np.uint8)
  return out


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
