"""Video files in, RGB frames out: probe, decode at a chosen frame rate, and write (for tests and demos).

Decoding uses PyAV, whose wheel ships FFmpeg with its codecs, so nothing else needs installing. Times are in
seconds from the first decoded frame (a container whose stream starts at 0.033 s still gives 0.0 first).

Resampling to `fps` takes the presentation timestamps, not the frame count: output frame k is at time k / fps
and shows the source frame on screen then (the last one whose timestamp is <= k / fps), up to the end of the
last source frame. A 3 s video at 10 fps gives 15 frames at 5 fps (0.0, 0.2, ..., 2.8) and 60 at 20 fps (each
source frame twice); variable frame rate sources come out evenly spaced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from clipva.atomic import atomic_path
from clipva.errors import BadInputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm")
# Encoder of write_video by container; all ship in PyAV's wheel. yuv420p needs even width and height.
_ENCODERS = {".mp4": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}
_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}
_EPS = 1e-6  # seconds: a timestamp this close to a sample time counts as on it (float rounding of pts * tb)


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` reads from a video's first video stream (fps is its average frame rate)."""

    path: str
    duration: float
    fps: float
    n_frames: int
    width: int
    height: int


def list_videos(path: str | Path) -> list[Path]:
    """The video files (VIDEO_SUFFIXES, any case) in a folder, sorted by name, or a single video file."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise BadInputError(f"{path}: not a video file (expected one of {', '.join(VIDEO_SUFFIXES)})")
        return [path]
    if not path.is_dir():
        raise BadInputError(f"{path}: no such video file or folder")
    videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise BadInputError(f"{path}: folder has no video files ({', '.join(VIDEO_SUFFIXES)})")
    return videos


def _reason(err: Exception) -> str:
    """FFmpeg's own words for an error, without the file name PyAV appends (the message names it first)."""
    return f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}"


def _open(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    try:
        container = av.open(str(path))
    except FileNotFoundError:
        raise BadInputError(f"{path}: video file is missing") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: cannot read video ({_reason(err)})") from None
    if not container.streams.video:
        container.close()
        raise BadInputError(f"{path}: file has no video stream")
    return container, container.streams.video[0]


def probe(path: str | Path) -> VideoInfo:
    """Duration (s), average fps, frame count and size of a video; BadInputError naming the file if unreadable.

    The frame count is the container's when it stores one (mp4, avi), else the number of video packets (mkv,
    webm), which needs one pass over the file but no decoding.
    """
    path = Path(path)
    container, stream = _open(path)
    with container:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        n_frames = stream.frames
        try:
            if n_frames <= 0:
                n_frames = sum(1 for packet in container.demux(stream) if packet.size and packet.pts is not None)
        except av.FFmpegError as err:
            raise BadInputError(f"{path}: cannot read video ({_reason(err)})") from None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = n_frames / fps if fps else 0.0
    if n_frames <= 0 or not width or not height:
        raise BadInputError(f"{path}: video stream has no frames")
    return VideoInfo(str(path), duration, fps, int(n_frames), int(width), int(height))


def _to_rgb(frame: av.VideoFrame) -> Image.Image:
    """The frame as shown: RGB, turned upright when the stream has a rotation (phone videos)."""
    image = frame.to_image()
    rotation = round(getattr(frame, "rotation", 0) or 0) % 360  # counter-clockwise degrees
    turn = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    return image.transpose(turn[rotation]) if rotation in turn else image


def _native(path: Path) -> Iterator[tuple[float, float, Image.Image]]:
    """(time, duration, image) of every decoded frame, time from the first frame; errors name the file."""
    container, stream = _open(path)
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    default_step = 1.0 / float(rate) if rate else 0.04
    start, last = None, None  # pts (s) of the first frame, time of the previous one
    with container:
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and frame.time_base is not None:
                    pts = float(frame.pts * frame.time_base)
                    start = pts if start is None else start
                    t = pts - start
                else:
                    t = 0.0 if last is None else last + default_step
                if last is not None and t <= last:  # missing, repeated or out-of-order timestamp
                    t = last + default_step
                step = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
                last = t
                yield t, step or default_step, _to_rgb(frame)
        except av.FFmpegError as err:
            where = f"after {last:.3f} s" if last is not None else "at the start"
            raise BadInputError(f"{path}: cannot decode video {where} ({_reason(err)})") from None
    if last is None:
        raise BadInputError(f"{path}: video stream has no frames")


def decode(path: str | Path, fps: float | None = None) -> Iterator[tuple[float, int, Image.Image]]:
    """Yield (time_s, frame_index, RGB image) for each output frame; fps None keeps the source's frames.

    frame_index counts the output frames from 0. With fps None, time_s is the frame's presentation time; with
    an fps, it is frame_index / fps (see the module doc). Raises BadInputError naming the file.
    """
    path = Path(path)
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number or None, got {fps!r}")
    if fps is None:
        for index, (t, _, image) in enumerate(_native(path)):
            yield t, index, image
        return
    index, held = 0, None  # held: (time, duration, image) of the source frame on screen
    for current in _native(path):
        if held is not None:
            while index / fps < current[0] - _EPS:  # samples before the new frame shows the held one
                yield index / fps, index, held[2]
                index += 1
        held = current
    end = held[0] + held[1]
    while index / fps < end - _EPS:
        yield index / fps, index, held[2]
        index += 1


def write_video(path: str | Path, frames: Iterable[Image.Image | np.ndarray], fps: float) -> Path:
    """Encode RGB frames (PIL images or HxWx3 uint8 arrays, all one size) at a constant `fps`.

    The encoder follows the suffix: libx264 for .mp4/.mkv, mpeg4 for .avi, VP9 for .webm (yuv420p; an odd
    width or height is padded with one black column or row). Written atomically; returns the path.
    """
    path = Path(path)
    if path.suffix.lower() not in _ENCODERS:
        raise ValueError(f"{path}: write_video writes {', '.join(_ENCODERS)}, not {path.suffix!r}")
    suffix = path.suffix.lower()
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=_FORMATS[suffix]) as out:
        stream = None
        for image in frames:
            array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
            height, width = array.shape[:2]
            if stream is None:
                stream = out.add_stream(_ENCODERS[suffix], rate=rate)
                stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
                size = (height, width)
            elif (height, width) != size:
                raise ValueError(f"{path}: frame of {width}x{height} after frames of {size[1]}x{size[0]}")
            if width % 2 or height % 2:
                array = np.pad(array, ((0, height % 2), (0, width % 2), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                out.mux(packet)
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            out.mux(packet)
    return path
