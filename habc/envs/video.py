"""Writing frames to an mp4 (H.264 through PyAV) or an animated GIF (Pillow)."""

import os

import numpy as np


def write_video(path: str, frames, fps: float = 10.0) -> str:
  """Writes ``frames`` (uint8 [T, H, W, 3]) to ``path``; the suffix (.mp4 or .gif) picks the format.

  Returns the path. mp4 needs even sides; odd frames are padded by one pixel.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
    raise ValueError(f'write_video({path!r}): frames must be uint8 [T, H, W, 3] with T > 0, got '
                     f'{frames.dtype} {frames.shape}.')
  ext = os.path.splitext(path)[1].lower()
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  if ext == '.gif':
    from PIL import Image
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=int(round(1000 / fps)))
  elif ext == '.mp4':
    _write_mp4(path, frames, fps)
  else:
    raise ValueError(f'write_video: unsupported suffix {ext!r} in {path!r}; use .mp4 or .gif.')
  return path


def _write_mp4(path: str, frames: np.ndarray, fps: float) -> None:
  import fractions

  import av
  _, h, w, _ = frames.shape
  ph, pw = h % 2, w % 2
  if ph or pw:
    frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
  with av.open(path, mode='w') as container:
    stream = container.add_stream('libx264', rate=fractions.Fraction(fps).limit_denominator(1000))
    stream.width, stream.height = w + pw, h + ph
    stream.pix_fmt = 'yuv420p'
    for f in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(f, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def tile_views(views) -> np.ndarray:
  """Side-by-side frame uint8 [H, sum W, 3] of camera views with the same height."""
  return np.concatenate([np.asarray(v) for v in views], axis=1)
