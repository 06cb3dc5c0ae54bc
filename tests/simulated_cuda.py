"""A CPU stand-in for a CUDA device: device-placement bugs show up on a machine without a GPU.

Inside `simulated_cuda()`, tensors are still computed on the CPU but carry where they would live:
- `device="cuda"` in a factory, `.to("cuda")`, `.cuda()` and `Module.to("cuda")` put them on the device;
  `.cpu()` brings a copy back; `.device` and `.is_cuda` report the simulated place;
- a tensor made on the host (a factory without a device, `torch.from_numpy`, a module's own parameters and
  buffers) stays there, and results follow their inputs;
- an op that mixes a device tensor with a host tensor of one or more dimensions raises, as CUDA does (host
  scalars and cross-device `copy_` are allowed, as on CUDA), and so does `.numpy()` of a device tensor;
- tensors of unknown origin (autograd's gradients, `.data`) match either side.
`torch.cuda.is_available()` stays False: code under test is handed `torch.device("cuda")` explicitly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

HOST, DEVICE = "host", "cuda"
_TAG = "_simulated_place"
CUDA = torch.device("cuda", 0)
# Ops that CUDA allows across devices: copies, and indexing a device tensor with host indices.
_CROSS_DEVICE = {"copy_", "__getitem__", "__setitem__", "index_put_", "_has_compatible_shallow_copy_type", "__set__"}


class DeviceMismatch(RuntimeError):
    pass


def place_of(t: torch.Tensor) -> str | None:
    found = t.__dict__.get(_TAG)
    if found is None and isinstance(t, nn.Parameter):
        return HOST  # parameters are created on the host unless moved
    return found


def _tag(out, place: str | None):
    if place is None:
        return out
    if isinstance(out, torch.Tensor):
        out.__dict__[_TAG] = place
    elif isinstance(out, (list, tuple)):
        for item in out:
            _tag(item, place)
    return out


def _tensors(obj) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _is_cuda(device) -> bool:
    if device is None or isinstance(device, torch.dtype):
        return False
    if isinstance(device, int):
        return True
    return torch.device(device).type == "cuda"


def _alias(t: torch.Tensor) -> torch.Tensor:
    return t.view_as(t)  # a new tensor object (own placement), same storage and autograd history


_DEVICE_GETTER, _IS_CUDA_GETTER = torch.Tensor.device.__get__, torch.Tensor.is_cuda.__get__  # compare with ==


class _SimulatedCuda(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if func == _DEVICE_GETTER:
            return CUDA if place_of(args[0]) == DEVICE else func(*args)
        if func == _IS_CUDA_GETTER:
            return place_of(args[0]) == DEVICE
        if func is torch.Tensor.to:
            return self._to(func, args, kwargs)
        if func is torch.Tensor.cuda:
            return _tag(_alias(args[0]), DEVICE)
        if func is torch.Tensor.cpu:
            return _tag(_alias(args[0]), HOST) if place_of(args[0]) == DEVICE else func(*args, **kwargs)
        if func is torch.Tensor.pin_memory:
            return _tag(_alias(args[0]), HOST)
        if func is torch.Tensor.numpy and place_of(args[0]) == DEVICE:
            raise TypeError("can't convert cuda:0 device type tensor to numpy (simulated CUDA): use .cpu() first")
        if "device" in kwargs:
            place = DEVICE if _is_cuda(kwargs["device"]) else HOST
            if place == DEVICE:
                kwargs["device"] = "cpu"
            return _tag(func(*args, **kwargs), place)
        places = {place_of(t) for t in _tensors((args, kwargs)) if t.dim() > 0} - {None}
        if name in ("__setitem__", "index_put_"):  # host indices are fine, values must be on the destination
            values = args[2] if len(args) > 2 else None
            if isinstance(values, torch.Tensor) and values.dim() > 0:
                there, here = place_of(args[0]), place_of(values)
                if None not in (there, here) and there != here:
                    raise DeviceMismatch(f"{name}: values on {here} written into a tensor on {there} (simulated CUDA)")
        if len(places) > 1 and name not in _CROSS_DEVICE:
            raise DeviceMismatch(
                f"{name}: expected all tensors to be on the same device, but found at least two devices, "
                "cuda:0 and cpu (simulated CUDA)"
            )
        out = func(*args, **kwargs)
        if name == "__getitem__":
            return _tag(out, place_of(args[0]))
        if name in _CROSS_DEVICE or name.endswith("_"):  # in place: the destination keeps its place
            return out
        place = DEVICE if DEVICE in places else HOST if places else None
        if place is None and not list(_tensors((args, kwargs))):
            place = HOST  # a factory without a device
        return _tag(out, place)

    def _to(self, func, args, kwargs):
        t, rest = args[0], args[1:]
        if rest and isinstance(rest[0], torch.Tensor):
            target, dtype = place_of(rest[0]), rest[0].dtype
        else:
            device, dtype, _, _ = torch._C._nn._parse_to(*rest, **kwargs)
            target = None if device is None else DEVICE if _is_cuda(device) else HOST
        out = t.to(dtype) if dtype is not None else t
        if target is None:
            return _tag(out, place_of(t))
        if target == place_of(t) and out is t:
            return t
        if isinstance(t, nn.Parameter):
            _tag(t, target)  # Module.to() moves a parameter by setting its .data to what this returns
        return _tag(_alias(out) if out is t else out, target)


class _Generator:
    """torch.Generator(device="cuda") needs a GPU; a host generator stands in for it."""

    def __new__(cls, device="cpu"):
        return _REAL_GENERATOR(device="cpu")


_REAL_GENERATOR, _REAL_FROM_NUMPY = torch.Generator, torch.from_numpy


def _from_numpy(array):
    """torch.from_numpy is no torch function a mode sees: its tensors are marked as the host's here."""
    return _tag(_REAL_FROM_NUMPY(array), HOST)


@contextlib.contextmanager
def simulated_cuda():
    """Run the body with the simulated CUDA device; yields the device to hand to the code under test."""
    torch.Generator, torch.from_numpy = _Generator, _from_numpy
    try:
        with _SimulatedCuda():
            yield CUDA
    finally:
        torch.Generator, torch.from_numpy = _REAL_GENERATOR, _REAL_FROM_NUMPY
