"""Look at a simulated task: run its scripted expert and print success, length and speed.

  python -m habc.envs --task=fold --episodes=20 [--json] [--video=PATH]
  python -m habc.envs --list

Episode i uses seed ``--seed + i``. The first episode renders all cameras at ``--image_size`` (its
control steps give ``steps_per_s_render``); the others run state-only (``steps_per_s_norender``).
Rendering does not change the physics, so every episode counts toward the success rate.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from habc import envs


def parse_args(argv):
  p = argparse.ArgumentParser(prog='python -m habc.envs', description=__doc__.split('\n')[0])
  p.add_argument('--task', default='fold', help=f'one of {envs.list_tasks()}')
  p.add_argument('--episodes', type=int, default=20)
  p.add_argument('--seed', type=int, default=0, help='seed of the first episode')
  p.add_argument('--image_size', type=int, default=64)
  p.add_argument('--json', action='store_true', help='print one JSON object')
  p.add_argument('--video', default=None, help='write the first episode to this .mp4 or .gif')
  p.add_argument('--video_size', type=int, default=192, help='pixels per camera in the video')
  p.add_argument('--snapshots', default=None,
                 help='write DIR/<task>_initial.png and DIR/<task>_success.png (top camera) of the '
                      'first successful episode, at --snapshot_size, and exit')
  p.add_argument('--snapshot_size', type=int, default=480)
  p.add_argument('--list', action='store_true', help='print the simulated task names and exit')
  return p.parse_args(argv)


def run_episode(env, expert, video_size=None):
  """Runs the expert for one episode -> (success, length, seconds in step/act, video frames)."""
  ts = env.reset()
  expert.reset()
  frames, seconds, n = [], 0.0, 0
  while True:
    if video_size:
      frames.append(np.concatenate([env.render(c, video_size) for c in envs.CAMERAS], 1))
    if ts.last():
      break
    t = time.perf_counter()
    ts = env.step(expert.act(env))
    seconds += time.perf_counter() - t
    n += 1
  return bool(ts.discount == 0), n, seconds, frames


def evaluate(task, episodes, seed=0, image_size=64, video_size=None):
  """Runs ``episodes`` expert episodes -> (summary dict, frames of the first episode)."""
  results, first_frames = [], []
  render_steps = render_s = plain_steps = plain_s = 0.0
  for i in range(episodes):
    rendered = i == 0
    env = envs.make(task, seed=seed + i, image_size=image_size,
                    cameras=envs.CAMERAS if rendered else ())
    ok, n, s, frames = run_episode(env, env.make_expert(seed + i),
                                   video_size if rendered else None)
    env.close()
    results.append((ok, n))
    if rendered:
      render_steps, render_s, first_frames = n, s, frames
    else:
      plain_steps, plain_s = plain_steps + n, plain_s + s
  if episodes == 1:  # No state-only episode ran: time one.
    env = envs.make(task, seed=seed, image_size=image_size, cameras=())
    _, plain_steps, plain_s, _ = run_episode(env, env.make_expert(seed))
  summary = {
      'task': task,
      'episodes': episodes,
      'success_rate': float(np.mean([ok for ok, _ in results])),
      'mean_length': float(np.mean([n for _, n in results])),
      'steps_per_s_render': float(render_steps / max(render_s, 1e-9)),
      'steps_per_s_norender': float(plain_steps / max(plain_s, 1e-9)),
  }
  return summary, first_frames


def snapshots(task, directory, size=480, seed=0, tries=10):
  """Writes the top view of the initial and the success state of the first solved episode."""
  from PIL import Image
  for s in range(seed, seed + tries):
    env = envs.make(task, seed=s, cameras=())
    expert = env.make_expert(s)
    ts = env.reset()
    first = env.render('top', size)
    while not ts.last():
      ts = env.step(expert.act(env))
    if ts.discount == 0:
      os.makedirs(directory, exist_ok=True)
      paths = [os.path.join(directory, f'{task}_{n}.png') for n in ('initial', 'success')]
      Image.fromarray(first).save(paths[0])
      Image.fromarray(env.render('top', size)).save(paths[1])
      return paths
  raise RuntimeError(f'snapshots: the {task} expert solved none of seeds {seed}..{seed + tries - 1}.')


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.list:
    print('\n'.join(envs.list_tasks()))
    return 0
  if args.snapshots:
    print('\n'.join(snapshots(args.task, args.snapshots, args.snapshot_size, args.seed)))
    return 0
  if args.episodes < 1:
    raise SystemExit('--episodes must be at least 1.')
  summary, frames = evaluate(args.task, args.episodes, args.seed, args.image_size,
                             args.video_size if args.video else None)
  if args.video:
    from habc.envs import video
    env = envs.task_class(args.task)
    video.write_video(args.video, np.stack(frames), fps=env.control_hz)
  if args.json:
    print(json.dumps(summary))
  else:
    print(f"task {summary['task']}: {summary['episodes']} expert episodes\n"
          f"  success rate          {summary['success_rate']:.3f}\n"
          f"  mean length           {summary['mean_length']:.1f} control steps\n"
          f"  control steps/s       {summary['steps_per_s_render']:.1f} rendering "
          f"{len(envs.CAMERAS)} cameras at {args.image_size}x{args.image_size}, "
          f"{summary['steps_per_s_norender']:.1f} without rendering")
    if args.video:
      print(f'  video                 {args.video}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
